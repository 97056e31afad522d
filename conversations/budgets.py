"""Monthly spend limits: what a user may spend, has spent, and when it resets.

Months are calendar months in UTC. Spend is the sum of the ledger's costs
(conversations.UsageRecord) — the costs computed at call time. A call that a
limit governs, and every call on the server's keys, needs a price
(`unpriced_refusal`), so no spend escapes the limits; the unpriced calls a user's
own key may still make count as 0 and are flagged in the reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q, Sum
from django.utils import timezone

if TYPE_CHECKING:
    from accounts.models import User

WARN_AT = Decimal("0.8")


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The start of this UTC month and of the next."""
    now = (now or timezone.now()).astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def _setting(name: str) -> Decimal | None:
    raw = str(getattr(settings, name, "") or "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be an amount in USD, like 20 or 12.50") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name} cannot be negative")
    return value


def user_limit(user: User) -> Decimal | None:
    """The user's monthly limit in USD, or None for no limit."""
    if user.unlimited_budget:
        return None
    if user.monthly_budget is not None:
        return user.monthly_budget
    return _setting("DEFAULT_MONTHLY_BUDGET")


def server_key_limit() -> Decimal | None:
    return _setting("SERVER_KEY_MONTHLY_BUDGET")


def unpriced_refusal(user: User, key_source: str, model: str) -> str | None:
    """Why this user may not call an unpriced model with this key, said to them,
    or None when they may: unmetered spend on the operator's keys or under a
    budget would escape every limit."""
    if key_source == "server":
        rule = "calls on the server's key must be priced. Pick a priced model or add your own key"
    elif user_limit(user) is not None:
        rule = "calls under your monthly budget must be priced. Pick a priced model"
    else:
        return None
    return f"{model} has no price, and {rule}."


@dataclass(frozen=True)
class Spend:
    total: Decimal
    server_keys: Decimal


def month_spend(user: User, now: datetime | None = None) -> Spend:
    from conversations.models import UsageRecord

    start, end = month_bounds(now)
    sums = UsageRecord.objects.filter(user=user, created__gte=start, created__lt=end).aggregate(
        total=Sum("cost"), server=Sum("cost", filter=Q(key_source="server"))
    )
    return Spend(sums["total"] or Decimal(0), sums["server"] or Decimal(0))


@dataclass(frozen=True)
class BudgetStatus:
    limit: Decimal | None
    spent: Decimal
    resets_at: datetime
    server_limit: Decimal | None
    server_spent: Decimal

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    @property
    def server_exceeded(self) -> bool:
        return self.server_limit is not None and self.server_spent >= self.server_limit

    @property
    def warning(self) -> bool:
        """At 80% of either limit."""
        return any(
            limit is not None and limit > 0 and spent >= limit * WARN_AT
            for limit, spent in ((self.limit, self.spent), (self.server_limit, self.server_spent))
        )

    def left(self, key_source: str) -> Decimal | None:
        """What a call with this key may still spend this month (None: no limit):
        the user's budget left, and on the server's keys its allowance left too."""
        left = []
        if self.limit is not None:
            left.append(self.limit - self.spent)
        if key_source == "server" and self.server_limit is not None:
            left.append(self.server_limit - self.server_spent)
        return max(min(left), Decimal(0)) if left else None

    @property
    def used_fraction(self) -> Decimal | None:
        if self.limit is None or self.limit == 0:
            return None
        return min(self.spent / self.limit, Decimal(1))


def budget_status(user: User, now: datetime | None = None) -> BudgetStatus:
    spend = month_spend(user, now)
    return BudgetStatus(
        limit=user_limit(user),
        spent=spend.total,
        resets_at=month_bounds(now)[1],
        server_limit=server_key_limit(),
        server_spent=spend.server_keys,
    )


def budget_status_if_limited(user: User, now: datetime | None = None) -> BudgetStatus | None:
    """For the pages: None when no limit applies to the user — nothing to show,
    and no month of the ledger to sum (tens of thousands of rows for a heavy user)."""
    if user_limit(user) is None and server_key_limit() is None:
        return None
    return budget_status(user, now)
