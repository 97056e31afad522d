"""The ledger, the usage report and conversations, for operators.

The ledger is what operators bill from: it can be read, never added to, changed or
deleted here. Conversations show their metadata only; what people wrote is shown
only when the site allows it (ADMIN_CAN_READ_CHATS).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.urls.exceptions import NoReverseMatch
from django.utils.html import format_html

from conversations import reports, selectors
from conversations.models import Conversation, Message, UsageRecord, conversation_label
from llmchat.money import dollars
from pricing.models import ModelPrice
from providers.registry import PROVIDER_NAMES

REPORT_TEMPLATE = "admin/conversations/usage_report.html"


def _can_read_chats() -> bool:
    # Read per request, so that turning it off takes effect without a restart
    # of anything that cached the admin.
    return bool(getattr(settings, "ADMIN_CAN_READ_CHATS", False))


# What people wrote: a conversation's title (their words, or the first words of
# their first message), its system prompt and its messages.
_CONTENT_FIELDS = frozenset({"title", "system_prompt", "messages"})


def _tokens(obj: UsageRecord | Message) -> str:
    text = f"{obj.input_tokens:,} in / {obj.output_tokens:,} out"
    extras = [
        f"{obj.cached_tokens:,} cached" if obj.cached_tokens else "",
        f"{obj.reasoning_tokens:,} reasoning" if obj.reasoning_tokens else "",
    ]
    extra = ", ".join(e for e in extras if e)
    return f"{text} ({extra})" if extra else text


def _cost(value: Decimal | None) -> str:
    return dollars(value)


# --- The ledger and its report ---------------------------------------------------


class ProviderFilter(admin.SimpleListFilter):
    """The providers by name, without the SELECT DISTINCT over the whole table that
    a plain field filter runs on every page of a ledger of millions of rows."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in PROVIDER_NAMES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(provider=value) if value else queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "user_email",
        "provider",
        "model",
        "key_source",
        "tokens",
        "cost",
        "unpriced",
        "estimated",
        "fallback_price",
        "outcome",
    ]
    list_filter = [
        ProviderFilter,
        "key_source",
        "outcome",
        "unpriced",
        "estimated",
        "fallback_price",
    ]
    search_fields = ["user_email", "model"]
    date_hierarchy = "created"
    # Nothing in the list reads a related row (the user column is the ledger's own
    # email): no join, which would only slow the page down.
    list_select_related = False
    # The ledger grows without bound: don't count all of it on every page.
    show_full_result_count = False
    readonly_fields = ["conversation_link"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="tokens")
    def tokens(self, obj: UsageRecord) -> str:
        return _tokens(obj)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The conversation by its label, not by str() (its title), in the same place.
        fields = [f for f in super().get_fields(request, obj) if f != "conversation_link"]
        return ["conversation_link" if f == "conversation" else f for f in fields]

    @admin.display(description="conversation")
    def conversation_link(self, obj: UsageRecord) -> str:
        if obj.conversation_id is None:
            return "—"
        label = conversation_label(obj.conversation_id)
        if _can_read_chats() and obj.conversation is not None:
            label = obj.conversation.title or label
        url = reverse(
            f"{self.admin_site.name}:conversations_conversation_change",
            args=[obj.conversation_id],
        )
        return format_html('<a href="{}">{}</a>', url, label)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("report/", view(self.report_view), name="{}_{}_report".format(*info)),
            path("report/csv/", view(self.report_csv_view), name="{}_{}_report_csv".format(*info)),
            *super().get_urls(),
        ]

    def report_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = reports.ReportForm.from_params(request.GET)
        report = reports.usage_report(form.filters()) if form.is_valid() else None
        bars = reports.chart_bars(report) if report is not None else []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Usage report",
            "form": form,
            "report": report,
            "bars": bars,
            "chart_width": max(len(bars), 1) * reports.BAR_STEP,
            "chart_height": reports.CHART_HEIGHT,
            "peak": max(bars, key=lambda b: b.height, default=None),
            "known_models": ModelPrice.objects.order_by("model")
            .values_list("model", flat=True)
            .distinct(),
        }
        return TemplateResponse(request, REPORT_TEMPLATE, context)

    def report_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = reports.ReportForm.from_params(request.GET)
        if not form.is_valid():
            errors = "; ".join(
                f"{name}: {' '.join(str(m) for m in messages)}"
                for name, messages in form.errors.items()
            )
            return HttpResponse(
                f"Invalid report filters: {errors}\n",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        report = reports.usage_report(form.filters(), chart=False)
        filename = f"usage-by-{report.filters.group}-{report.start.date()}-{report.last_day}.csv"
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        reports.write_csv(report, response)
        return response


def _app_list_with_report(get_app_list: Any) -> Any:
    """The usage report in the admin index and sidebar, under the ledger, for those
    who may see the ledger."""

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = get_app_list(request, app_label)
        for app in apps:
            if app["app_label"] != UsageRecord._meta.app_label:
                continue
            ledger = next((m for m in app["models"] if m["object_name"] == "UsageRecord"), None)
            if ledger is None or not ledger["perms"].get("view"):
                continue
            try:
                url = reverse(f"{admin.site.name}:conversations_usagerecord_report")
            except NoReverseMatch:
                continue
            app["models"].append(
                {
                    "model": UsageRecord,
                    "name": "Usage report",
                    "object_name": "UsageReport",
                    "perms": {"view": True},
                    "admin_url": url,
                    "add_url": None,
                    "view_only": True,
                }
            )
            app["models"].sort(key=lambda m: m["name"])
        return apps

    app_list.wraps_usage_report = True  # type: ignore[attr-defined]
    return app_list


if not getattr(admin.site.get_app_list, "wraps_usage_report", False):
    admin.site.get_app_list = _app_list_with_report(admin.site.get_app_list)  # type: ignore[method-assign]


# --- Conversations -----------------------------------------------------------------


class MessageInline(admin.TabularInline):
    """Shown only when the site lets staff read chats."""

    model = Message
    fields = ("created", "role", "status", "content", "tokens", "cost_display")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="tokens")
    def tokens(self, obj: Message) -> str:
        return _tokens(obj) if obj.role == "assistant" else "—"

    @admin.display(description="cost")
    def cost_display(self, obj: Message) -> str:
        return _cost(obj.cost)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Metadata and counts; the title, system prompt and messages are what people
    wrote, shown (and searched) only when the site lets staff read chats. Otherwise a
    conversation is "Conversation #<id>" everywhere the admin names it."""

    list_display = [
        "name",
        "user",
        "provider",
        "model",
        "created",
        "updated",
        "message_count",
        "total_cost",
    ]
    list_filter = [ProviderFilter]
    list_select_related = ["user"]
    date_hierarchy = "updated"
    metadata = ("user", "provider", "model", "created", "updated")

    @admin.display(description="conversation")
    def name(self, obj: Conversation) -> str:
        if _can_read_chats() and obj.title:
            return obj.title
        return conversation_label(obj.pk)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # Not the title when it may not be read: a search is a way to read it.
        return ["title", "user__email"] if _can_read_chats() else ["user__email"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # ?title__startswith=... in the list's URL would read a title letter by letter.
        if not _can_read_chats() and lookup.split(LOOKUP_SEP)[0] in _CONTENT_FIELDS:
            return False
        return bool(super().lookup_allowed(lookup, value, request))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        messages = (
            Message.objects.filter(conversation=OuterRef("pk"))
            .order_by()
            .values("conversation")
            .annotate(n=Count("id"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=Coalesce(Subquery(messages, output_field=IntegerField()), 0),
                # From the ledger, as on the user's own pages.
                total_cost=selectors.conversation_total_cost(),
            )
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [*self.metadata, "message_count", "total_cost"]
        if _can_read_chats():
            fields[1:1] = ["title"]
            fields.append("system_prompt")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
        return [MessageInline] if _can_read_chats() else []

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Any) -> int:
        return int(obj.message_count)

    @admin.display(description="total cost", ordering="total_cost")
    def total_cost(self, obj: Any) -> str:
        return _cost(obj.total_cost)
