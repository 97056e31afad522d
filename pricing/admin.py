from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from llmchat.money import dollars
from pricing.models import PRICE_FIELDS, ModelPrice


class CurrentFilter(admin.SimpleListFilter):
    title = "history"
    parameter_name = "rows"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("all", "All rows (with history)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> Any:
        if self.value() == "all":
            return queryset
        return queryset.latest_rows()  # type: ignore[attr-defined]

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Newest price per model",
        }
        yield from super().choices(changelist)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "provider",
        "model_id",
        "name",
        "input_price",
        "cached_input_price",
        "cache_write_price",
        "output_price",
        "tier",
        "context_window",
        "effective_from",
        "active",
        "deprecated",
    ]
    list_filter = [CurrentFilter, "provider", "active", "deprecated"]
    search_fields = ["model", "name"]
    ordering = ["provider", "model", "-effective_from"]
    readonly_fields = ["history", "created"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "name", "active", "deprecated", "source"]}),
        (
            "Prices per million tokens (USD)",
            {
                "fields": [
                    "input_per_mtok",
                    "cached_input_per_mtok",
                    "cache_write_per_mtok",
                    "output_per_mtok",
                    "reasoning_per_mtok",
                ]
            },
        ),
        (
            "Long-context tier",
            {
                "fields": [
                    "tier_threshold_tokens",
                    "tier_input_per_mtok",
                    "tier_cached_input_per_mtok",
                    "tier_cache_write_per_mtok",
                    "tier_output_per_mtok",
                ]
            },
        ),
        ("Limits", {"fields": ["context_window", "max_output_tokens"]}),
        ("History", {"fields": ["effective_from", "history", "created"]}),
    ]

    @admin.display(description="model", ordering="model")
    def model_id(self, obj: ModelPrice) -> str:
        return f"{obj.model} (fallback: models without a price)" if obj.is_fallback else obj.model

    @admin.display(description="input $/1M", ordering="input_per_mtok")
    def input_price(self, obj: ModelPrice) -> str:
        return dollars(obj.input_per_mtok)

    @admin.display(description="cached input $/1M", ordering="cached_input_per_mtok")
    def cached_input_price(self, obj: ModelPrice) -> str:
        return dollars(obj.cached_input_per_mtok)

    @admin.display(description="cache write $/1M", ordering="cache_write_per_mtok")
    def cache_write_price(self, obj: ModelPrice) -> str:
        return dollars(obj.cache_write_per_mtok)

    @admin.display(description="output $/1M", ordering="output_per_mtok")
    def output_price(self, obj: ModelPrice) -> str:
        return dollars(obj.output_per_mtok)

    @admin.display(description="tier")
    def tier(self, obj: ModelPrice) -> str:
        if obj.tier_threshold_tokens is None:
            return "—"
        return (
            f">{obj.tier_threshold_tokens:,}: "
            f"in {dollars(obj.tier_input_per_mtok)} out {dollars(obj.tier_output_per_mtok)}"
        )

    @admin.display(description="price history")
    def history(self, obj: ModelPrice) -> str:
        if obj.pk is None:
            return "—"
        rows = ModelPrice.objects.filter(provider=obj.provider, model=obj.model).order_by(
            "-effective_from"
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{r.effective_from:%Y-%m-%d %H:%M}",
                    dollars(r.input_per_mtok),
                    dollars(r.cached_input_per_mtok),
                    dollars(r.output_per_mtok),
                    "current" if r.pk == obj.pk else "",
                    r.source,
                )
                for r in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>From</th><th>Input</th><th>Cached</th><th>Output</th>"
            "<th></th><th>Source</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        # A new price is a new row: costs already recorded keep the price they
        # were computed with, and the history stays complete.
        if change and any(name in form.changed_data for name in PRICE_FIELDS):
            effective = obj.effective_from
            if "effective_from" not in form.changed_data or effective <= timezone.now():
                effective = timezone.now()
            obj.pk = None
            obj.effective_from = effective
            obj._state.adding = True
            obj.full_clean()
            super().save_model(request, obj, form, change=False)
            messages.info(
                request,
                f"Saved as a new price in effect from {effective:%Y-%m-%d %H:%M} UTC; "
                "the previous price stays in the history.",
            )
            return
        super().save_model(request, obj, form, change)
