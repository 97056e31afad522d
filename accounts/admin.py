from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, DecimalField, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts.forms import UserAdminChangeForm, UserAdminCreationForm
from accounts.models import User
from conversations.budgets import month_bounds, user_limit
from conversations.models import UsageRecord
from conversations.reports import ReportFilters
from providers.models import ProviderKey

_MONEY = DecimalField(max_digits=18, decimal_places=6)


def usd(value: Decimal) -> str:
    """Whole cents as cents ("$20.00"), smaller amounts to the micro-dollar ("$0.0042")."""
    if value == value.quantize(Decimal("0.01")):
        return f"${value:,.2f}"
    return f"${value:,.6f}".rstrip("0")


def _month_spend() -> Subquery:
    """This UTC month's spend per user, from the ledger: one subquery for the whole list."""
    start, end = month_bounds()
    per_user = (
        UsageRecord.objects.filter(user=OuterRef("pk"), created__gte=start, created__lt=end)
        .order_by()
        .values("user")
        .annotate(total=Sum("cost"))
        .values("total")
    )
    return Subquery(per_user, output_field=_MONEY)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserAdminChangeForm
    add_form = UserAdminCreationForm
    ordering = ["email"]
    list_display = [
        "email",
        "date_joined",
        "last_login",
        "month_spend",
        "keys",
        "budget",
        "is_staff",
        "is_active",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active", "unlimited_budget"]
    search_fields = ["email", "first_name", "last_name"]
    readonly_fields = ["last_login", "date_joined", "usage_summary"]
    actions = ["deactivate_users"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        (_("Personal info"), {"fields": ("first_name", "last_name")}),
        ("Budget", {"fields": ("monthly_budget", "unlimited_budget", "usage_summary")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        # The masked form only: the encrypted key is never loaded, let alone decrypted.
        keys = ProviderKey.objects.only("id", "user_id", "provider", "masked").order_by("provider")
        return (
            super()
            .get_queryset(request)
            .annotate(spent=Coalesce(_month_spend(), Decimal(0), output_field=_MONEY))
            .prefetch_related(Prefetch("provider_keys", queryset=keys))
        )

    @admin.display(description="spent this month", ordering="spent")
    def month_spend(self, obj: Any) -> str:
        return usd(obj.spent)

    @admin.display(description="keys")
    def keys(self, obj: User) -> str:
        keys: Any = obj.provider_keys
        return ", ".join(f"{key.provider} {key.masked}" for key in keys.all()) or "—"

    @admin.display(description="budget")
    def budget(self, obj: User) -> str:
        limit = user_limit(obj)
        if obj.unlimited_budget:
            return "unlimited"
        if limit is None:
            return "none"
        if obj.monthly_budget is None:
            return f"default ({usd(limit).removesuffix('.00')})"
        return usd(limit)

    @admin.display(description="usage this month")
    def usage_summary(self, obj: User) -> str:
        if obj.pk is None:
            return "—"
        start, end = month_bounds()
        sums = UsageRecord.objects.filter(user=obj, created__gte=start, created__lt=end).aggregate(
            cost=Sum("cost"), requests=Count("id"), unpriced=Count("id", filter=Q(unpriced=True))
        )
        spent = sums["cost"] or Decimal(0)
        limit = user_limit(obj)
        if limit is None:
            against = f"{usd(spent)} (no limit)"
        elif limit:
            against = f"{usd(spent)} of {usd(limit)} ({spent / limit:.0%})"
        else:
            against = f"{usd(spent)} of {usd(limit)}"
        requests = sums["requests"]
        unpriced = sums["unpriced"]
        url = reverse("admin:conversations_usagerecord_report")
        query = ReportFilters(user=obj.email, group="model").querystring
        return format_html(
            '{} · {} request{}{} · <a href="{}">See it in the usage report</a>',
            against,
            f"{requests:,}",
            "" if requests == 1 else "s",
            f" ({unpriced:,} unpriced)" if unpriced else "",
            f"{url}?{query}",
        )

    @admin.action(description="Deactivate selected users", permissions=["change"])
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # Not oneself: that would lock the operator out mid-action.
        me = request.user.pk or 0
        ids = list(queryset.filter(is_active=True).exclude(pk=me).values_list("pk", flat=True))
        count = User.objects.filter(pk__in=ids).update(is_active=False)
        if queryset.filter(pk=me).exists():
            self.message_user(request, "You cannot deactivate yourself.", messages.WARNING)
        self.message_user(
            request,
            f"Deactivated {count} user{'' if count == 1 else 's'}.",
            messages.SUCCESS,
        )
