"""The usage page's chart of cost per day: every day of the month so far, a bar
for each, a labelled scale and day numbers. Laid out here (in SVG units) so the
template only draws; the site's CSP allows no inline styles to size bars with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from llmchat.money import dollars

BAR = 12  # the width a day takes, its bar 2 narrower
LEFT = 64  # room for the scale's labels
TOP = 8
HEIGHT = 100  # of the plot
BOTTOM = 18  # room for the day numbers


@dataclass(frozen=True)
class Bar:
    day: date
    cost: Decimal
    x: float
    y: float
    height: float
    label: str  # the day number under it, on some days


@dataclass(frozen=True)
class DailyChart:
    bars: list[Bar]
    peak: str  # the scale's top, as money
    width: int
    height: int = TOP + HEIGHT + BOTTOM
    plot_top: int = TOP
    plot_bottom: int = TOP + HEIGHT
    left: int = LEFT


def daily_cost(
    days: list[dict[str, Any]], first: date, last: date, month_end: date
) -> DailyChart | None:
    """The chart from `first` to `last` (inclusive) of usage_summary's by_day
    rows, drawn to the scale of the whole month (up to `month_end`, exclusive), or
    None when nothing was spent: an empty frame says less than a sentence."""
    cost = {row["day"]: row["cost"] for row in days}
    peak = max(cost.values(), default=Decimal(0))
    if peak <= 0:
        return None
    count = (last - first).days + 1
    bars = []
    for i in range(count):
        day = first + timedelta(days=i)
        spent = cost.get(day, Decimal(0))
        # At least a sliver for a day with any spend, however small next to the peak.
        height = round(max(float(spent / peak) * HEIGHT, 1.0 if spent else 0.0), 2)
        shown = i == 0 or i == count - 1 or (day.day % 7 == 0 and count - 1 - i >= 3)
        bars.append(
            Bar(
                day=day,
                cost=spent,
                x=LEFT + i * BAR + 1,
                y=TOP + HEIGHT - height,
                height=height,
                label=str(day.day) if shown else "",
            )
        )
    month = max((month_end - first).days, count)
    return DailyChart(bars=bars, peak=dollars(peak), width=LEFT + month * BAR + 4)
