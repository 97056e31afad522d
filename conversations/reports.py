"""The operators' usage report: the ledger (UsageRecord) summed over a period, by
user, provider, model, day or month.

`ReportForm` turns GET parameters into `ReportFilters` (or form errors for the page);
`usage_report(filters)` runs one aggregate query for the rows, and one more, small,
for the chart of cost over time (none when the rows already are that series). The
admin page and its CSV download both render the same `Report`, so the file holds
exactly what the page shows.

Days and months are UTC, as in conversations.budgets. Unpriced calls count as 0 in the
costs and are counted apart.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlencode

from django import forms
from django.db.models import Count, DateField, F, Q, Sum
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone

from conversations.budgets import month_bounds
from conversations.models import KeySource, UsageRecord, UsageRecordQuerySet
from llmchat.csvcells import safe_cell
from llmchat.money import dollars
from providers.registry import PROVIDER_NAMES

PERIODS = [
    ("today", "Today"),
    ("7d", "Last 7 days"),
    ("month", "This month"),
    ("last_month", "Last month"),
    ("custom", "Custom range"),
]
GROUPS = [
    ("user", "User"),
    ("provider", "Provider"),
    ("model", "Model"),
    ("day", "Day"),
    ("month", "Month"),
]
DEFAULT_PERIOD = "month"
DEFAULT_GROUP = "user"

# The columns after the group's, on the page and in the CSV.
METRIC_COLUMNS = (
    "Requests",
    "Input tokens",
    "Cached tokens",
    "Output tokens",
    "Reasoning tokens",
    "Cost (USD)",
    "Unpriced calls",
)
_GROUP_COLUMNS = {
    "user": ("User",),
    "provider": ("Provider",),
    "model": ("Provider", "Model"),
    "day": ("Day",),
    "month": ("Month",),
}
# A longer range is charted by month: a bar a day would be too thin to read.
CHART_MAX_DAYS = 92
MAX_RANGE_DAYS = 3660
_TOKEN_FIELDS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


def money(value: Decimal) -> str:
    """Costs as decimal strings with 6 places, as stored (SQLite may trim zeros)."""
    return f"{value:.6f}"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _month_start(day: date) -> date:
    return month_bounds(_day_start(day))[0].date()


def _next_month(day: date) -> date:
    return month_bounds(_day_start(day))[1].date()


@dataclass(frozen=True)
class ReportFilters:
    """What to report on. `since`/`until` are whole UTC days, both included; they
    apply to the custom period only."""

    period: str = DEFAULT_PERIOD
    since: date | None = None
    until: date | None = None
    provider: str = ""
    model: str = ""
    user: str = ""
    key_source: str = ""
    group: str = DEFAULT_GROUP

    def bounds(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The period as [start, end) in UTC."""
        today = (now or timezone.now()).astimezone(UTC).date()
        tomorrow = _day_start(today + timedelta(days=1))
        match self.period:
            case "today":
                return _day_start(today), tomorrow
            case "7d":
                return _day_start(today - timedelta(days=6)), tomorrow
            case "last_month":
                this_month, _ = month_bounds(now)
                return month_bounds(this_month - timedelta(days=1))
            case "custom" if self.since is not None and self.until is not None:
                return _day_start(self.since), _day_start(self.until + timedelta(days=1))
            case _:
                return month_bounds(now)

    def replace(self, **changes: Any) -> ReportFilters:
        return dataclasses.replace(self, **changes)

    def params(self) -> dict[str, str]:
        """As GET parameters, defaults left out: the report's URL for these filters."""
        params = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("since", "until") and self.period != "custom":
                continue
            if value in (None, "") or value == field.default:
                continue
            params[field.name] = value.isoformat() if isinstance(value, date) else str(value)
        return params

    @property
    def querystring(self) -> str:
        return urlencode(self.params())


class ReportForm(forms.Form):
    period = forms.ChoiceField(choices=PERIODS, required=False)
    since = forms.DateField(
        required=False,
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    until = forms.DateField(
        required=False,
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    provider = forms.ChoiceField(
        choices=[("", "All providers"), *((p, p) for p in PROVIDER_NAMES)], required=False
    )
    model = forms.CharField(max_length=200, required=False, strip=True)
    user = forms.CharField(max_length=254, required=False, strip=True, label="User email")
    key_source = forms.ChoiceField(
        choices=[("", "Any key"), *KeySource.choices], required=False, label="Key"
    )
    group = forms.ChoiceField(choices=GROUPS, required=False, label="Group by")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReportForm:
        """Bound to the request's parameters, with the defaults filled in, so that
        the page shows the period and grouping it reports on."""
        data = {key: params.get(key) for key in cls.base_fields if params.get(key) is not None}
        data.setdefault("period", DEFAULT_PERIOD)
        data.setdefault("group", DEFAULT_GROUP)
        return cls(data)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if data.get("period") == "custom":
            if since is None and "since" not in self.errors:
                self.add_error("since", "Enter the first day of the custom range.")
            if until is None and "until" not in self.errors:
                self.add_error("until", "Enter the last day of the custom range.")
        if until is not None and until >= date.max:
            self.add_error("until", "Enter an earlier date.")
        elif since is not None and until is not None:
            if since > until:
                self.add_error("until", "The range ends before it starts.")
            elif (until - since).days > MAX_RANGE_DAYS:
                self.add_error("until", "Choose a range of at most ten years.")
        return data

    def filters(self) -> ReportFilters:
        """The validated filters; call after is_valid()."""
        data = self.cleaned_data
        period = data.get("period") or DEFAULT_PERIOD
        custom = period == "custom"
        return ReportFilters(
            period=period,
            since=data.get("since") if custom else None,
            until=data.get("until") if custom else None,
            provider=data.get("provider") or "",
            model=data.get("model") or "",
            user=data.get("user") or "",
            key_source=data.get("key_source") or "",
            group=data.get("group") or DEFAULT_GROUP,
        )


@dataclass(frozen=True)
class ReportRow:
    group: tuple[str, ...]  # one value per group column
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost: Decimal
    unpriced: int
    # For day and month rows: the day, or the first of the month.
    bucket: date | None = None
    # The report one level down from this row (a user's models, a day's users...).
    drill: ReportFilters | None = None

    @property
    def cost_text(self) -> str:
        return money(self.cost)

    @property
    def cells(self) -> list[str]:
        """The row as the CSV writes it."""
        return [
            *self.group,
            str(self.requests),
            str(self.input_tokens),
            str(self.cached_tokens),
            str(self.output_tokens),
            str(self.reasoning_tokens),
            self.cost_text,
            str(self.unpriced),
        ]


@dataclass(frozen=True)
class ChartPoint:
    start: date  # the day, or the first of the month
    cost: Decimal


@dataclass(frozen=True)
class Report:
    filters: ReportFilters
    start: datetime
    end: datetime  # exclusive
    group_columns: tuple[str, ...]
    rows: list[ReportRow]
    totals: ReportRow
    chart: list[ChartPoint]
    chart_unit: str  # "day" or "month"

    @property
    def header(self) -> list[str]:
        return [*self.group_columns, *METRIC_COLUMNS]

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()

    def table(self) -> list[list[str]]:
        """Header, rows and totals, as the CSV holds them."""
        return [self.header, *(row.cells for row in self.rows), self.totals.cells]


def filtered_records(filters: ReportFilters, start: datetime, end: datetime) -> UsageRecordQuerySet:
    records = UsageRecord.objects.filter(created__gte=start, created__lt=end)
    if filters.provider:
        records = records.filter(provider=filters.provider)
    if filters.model:
        records = records.filter(model=filters.model)
    if filters.user:
        # By the ledger's email, so that a deleted account's calls are still found.
        records = records.filter(user_email__iexact=filters.user)
    if filters.key_source:
        records = records.filter(key_source=filters.key_source)
    return records


def _sums() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        **{name: Sum(name) for name in _TOKEN_FIELDS},
        "cost": Sum("cost"),
        "unpriced": Count("id", filter=Q(unpriced=True)),
    }


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def _grouped(records: UsageRecordQuerySet, group: str) -> Iterable[Mapping[str, Any]]:
    """The one aggregate query for the rows."""
    sums = _sums()
    # Biggest spenders first; all-unpriced groups (a NULL sum) with the zeros.
    by_cost = F("cost").desc(nulls_last=True)
    match group:
        case "user":
            return records.values("user_email").annotate(**sums).order_by(by_cost, "user_email")
        case "provider":
            return records.values("provider").annotate(**sums).order_by(by_cost, "provider")
        case "model":
            return (
                records.values("provider", "model")
                .annotate(**sums)
                .order_by(by_cost, "provider", "model")
            )
    return (
        records.annotate(bucket=_bucket("month" if group == "month" else "day"))
        .values("bucket")
        .annotate(**sums)
        .order_by("bucket")
    )


def _bucket(unit: str) -> TruncDate | TruncMonth:
    """The UTC day or month of a call, as a date."""
    if unit == "month":
        return TruncMonth("created", output_field=DateField(), tzinfo=UTC)
    return TruncDate("created", tzinfo=UTC)


def _row(filters: ReportFilters, values: Mapping[str, Any]) -> ReportRow:
    group, drill = _group_of(filters, values)
    bucket = _as_date(values["bucket"]) if "bucket" in values else None
    return ReportRow(
        group=group,
        requests=values["requests"],
        input_tokens=values["input_tokens"] or 0,
        cached_tokens=values["cached_tokens"] or 0,
        output_tokens=values["output_tokens"] or 0,
        reasoning_tokens=values["reasoning_tokens"] or 0,
        cost=values["cost"] or Decimal(0),
        unpriced=values["unpriced"],
        bucket=bucket,
        drill=drill,
    )


def _group_of(
    filters: ReportFilters, values: Mapping[str, Any]
) -> tuple[tuple[str, ...], ReportFilters]:
    match filters.group:
        case "user":
            email = values["user_email"]
            return (email,), filters.replace(user=email, group="model")
        case "provider":
            provider = values["provider"]
            return (provider,), filters.replace(provider=provider, group="model")
        case "model":
            provider, model = values["provider"], values["model"]
            return (provider, model), filters.replace(provider=provider, model=model, group="user")
        case "month":
            first = _as_date(values["bucket"])
            last = _next_month(first) - timedelta(days=1)
            drill = filters.replace(period="custom", since=first, until=last, group="day")
            return (first.strftime("%Y-%m"),), drill
        case _:
            day = _as_date(values["bucket"])
            drill = filters.replace(period="custom", since=day, until=day, group="user")
            return (day.isoformat(),), drill


def _totals(rows: list[ReportRow], width: int) -> ReportRow:
    return ReportRow(
        group=("Total", *([""] * (width - 1))),
        requests=sum(r.requests for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        cost=sum((r.cost for r in rows), Decimal(0)),
        unpriced=sum(r.unpriced for r in rows),
    )


def _buckets(start: date, last: date, unit: str) -> Iterator[date]:
    current = _month_start(start) if unit == "month" else start
    while current <= last:
        yield current
        current = _next_month(current) if unit == "month" else current + timedelta(days=1)


def _chart(
    records: UsageRecordQuerySet,
    filters: ReportFilters,
    rows: list[ReportRow],
    span: tuple[date, date],
) -> tuple[list[ChartPoint], str]:
    first, last = span
    unit = "day" if (last - first).days < CHART_MAX_DAYS else "month"
    if filters.group == unit:
        # The rows are already the series: no second query.
        costs = {r.bucket: r.cost for r in rows if r.bucket is not None}
    else:
        series = (
            records.annotate(bucket=_bucket(unit))
            .values("bucket")
            .annotate(cost=Sum("cost"))
            .order_by("bucket")
        )
        costs = {_as_date(s["bucket"]): s["cost"] or Decimal(0) for s in series}
    points = [ChartPoint(b, costs.get(b, Decimal(0))) for b in _buckets(first, last, unit)]
    return points, unit


def usage_report(
    filters: ReportFilters, *, now: datetime | None = None, chart: bool = True
) -> Report:
    start, end = filters.bounds(now)
    records = filtered_records(filters, start, end)
    rows = [_row(filters, values) for values in _grouped(records, filters.group)]
    first, last = start.date(), (end - timedelta(days=1)).date()
    points, unit = _chart(records, filters, rows, (first, last)) if chart else ([], "day")
    columns = _GROUP_COLUMNS.get(filters.group, _GROUP_COLUMNS["day"])
    return Report(
        filters=filters,
        start=start,
        end=end,
        group_columns=columns,
        rows=rows,
        totals=_totals(rows, len(columns)),
        chart=points,
        chart_unit=unit,
    )


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def write_csv(report: Report, out: _Writable) -> None:
    writer = csv.writer(out)
    # Every cell: the group columns are emails and model names users typed.
    writer.writerows([safe_cell(cell) for cell in row] for row in report.table())


# --- The chart, drawn on the server: an inline SVG, no script -------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    cost_text: str  # as shown: llmchat.money.dollars


CHART_HEIGHT = 100
BAR_STEP = 10


def chart_bars(report: Report) -> list[Bar]:
    """Bars in a viewBox BAR_STEP units wide per point and CHART_HEIGHT high."""
    peak = max((p.cost for p in report.chart), default=Decimal(0))
    bars = []
    for i, point in enumerate(report.chart):
        height = float(point.cost / peak * CHART_HEIGHT) if peak else 0.0
        if point.cost and height < 1:
            height = 1.0  # a sliver, so that a day with some spend shows
        label = (
            point.start.strftime("%Y-%m")
            if report.chart_unit == "month"
            else (point.start.isoformat())
        )
        bars.append(
            Bar(
                x=i * BAR_STEP + 1,
                y=round(CHART_HEIGHT - height, 2),
                width=BAR_STEP - 2,
                height=round(height, 2),
                label=label,
                cost_text=dollars(point.cost),
            )
        )
    return bars
