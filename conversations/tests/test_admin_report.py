"""The operators' admin: the usage report (and its CSV) and the read-only ledger.
Conversations, with their content gate, are in test_admin_conversations.py."""

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from conftest import make_user
from conversations import reports
from conversations.models import UsageRecord
from conversations.reports import ReportFilters, usage_report

REPORT = "/admin/conversations/usagerecord/report/"
REPORT_CSV = "/admin/conversations/usagerecord/report/csv/"

# "Now", for every test here: Sunday 15 March 2026, noon UTC.
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Call:
    name: str
    created: str
    email: str
    provider: str
    model: str
    key_source: str
    tokens: tuple[int, int, int, int]  # input, cached, output, reasoning
    cost: str  # "-": unpriced


# The ledger the report tests run on: several users (carol's account is gone),
# providers, models, key sources and days, unpriced calls ("-") included.
LEDGER = """
a-today-1    2026-03-15T09:00    alice openai    gpt-4o           user   1000  200  500   0 0.010000
a-today-2    2026-03-15T10:00    alice anthropic claude-sonnet-4  server 2000    0  800 100 0.020000
b-today      2026-03-15T11:00    bob   openai    gpt-4o           server  500    0  100   0 0.003000
b-unpriced   2026-03-12T08:00    bob   google    gemini-2.5-flash user    300    0   50  20 -
a-demo       2026-03-12T18:30    alice demo      demo-echo        none     10    0   10   0 0.000000
c-deleted    2026-03-02T07:00    carol openai    gpt-4o           server 4000 1000 1000   0 0.050000
a-last-month 2026-02-20T12:00    alice openai    gpt-4o           user    100    0  100   0 0.001000
b-feb-end    2026-02-28T23:59:59 bob   anthropic claude-sonnet-4  user    200    0   30   0 0.002000
b-mar-start  2026-03-01T00:00:00 bob   anthropic claude-sonnet-4  user    100    0   20   0 0.004000
a-january    2026-01-10T12:00    alice openai    gpt-4o           user   5000    0 2000   0 0.100000
"""
CALLS = [
    Call(name, created, email, provider, model, key, (int(i), int(c), int(o), int(r)), cost)
    for name, created, email, provider, model, key, i, c, o, r, cost in (
        line.split() for line in LEDGER.strip().splitlines()
    )
]
THIS_MONTH = {
    "a-today-1",
    "a-today-2",
    "b-today",
    "b-unpriced",
    "a-demo",
    "c-deleted",
    "b-mar-start",
}


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return NOW


@pytest.fixture
def ledger(alice: Any, bob: Any, frozen_now: datetime) -> dict[str, UsageRecord]:
    users = {"alice": alice, "bob": bob, "carol": None}  # carol's account is gone
    records = UsageRecord.objects.bulk_create(
        UsageRecord(
            user=users[c.email],
            user_email=f"{c.email}@example.com",
            provider=c.provider,
            model=c.model,
            key_source=c.key_source,
            input_tokens=c.tokens[0],
            cached_tokens=c.tokens[1],
            output_tokens=c.tokens[2],
            reasoning_tokens=c.tokens[3],
            cost=None if c.cost == "-" else Decimal(c.cost),
            unpriced=c.cost == "-",
            outcome="complete",
            created=at(c.created),
        )
        for c in CALLS
    )
    return {c.name: r for c, r in zip(CALLS, records, strict=True)}


@pytest.fixture
def operator(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def expected_totals(names: set[str]) -> dict[str, Any]:
    """What the report should say for these calls, summed here in Python."""
    calls = [c for c in CALLS if c.name in names]
    return {
        "requests": len(calls),
        "input_tokens": sum(c.tokens[0] for c in calls),
        "cached_tokens": sum(c.tokens[1] for c in calls),
        "output_tokens": sum(c.tokens[2] for c in calls),
        "reasoning_tokens": sum(c.tokens[3] for c in calls),
        "cost": sum((Decimal(c.cost) for c in calls if c.cost != "-"), Decimal(0)),
        "unpriced": sum(c.cost == "-" for c in calls),
    }


def totals_of(report: reports.Report) -> dict[str, Any]:
    t = report.totals
    return {
        "requests": t.requests,
        "input_tokens": t.input_tokens,
        "cached_tokens": t.cached_tokens,
        "output_tokens": t.output_tokens,
        "reasoning_tokens": t.reasoning_tokens,
        "cost": t.cost,
        "unpriced": t.unpriced,
    }


def report_from(client: Client, **params: str) -> reports.Report:
    response = client.get(REPORT, params)
    assert response.status_code == 200
    report = response.context["report"]
    assert report is not None, response.context["form"].errors
    return report


def rows_of(report: reports.Report) -> list[tuple[tuple[str, ...], str, int]]:
    return [(r.group, r.cost_text, r.requests) for r in report.rows]


# --- Periods --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({}, THIS_MONTH),
        ({"period": "month"}, THIS_MONTH),
        ({"period": "today"}, {"a-today-1", "a-today-2", "b-today"}),
        ({"period": "7d"}, {"a-today-1", "a-today-2", "b-today", "b-unpriced", "a-demo"}),
        ({"period": "last_month"}, {"a-last-month", "b-feb-end"}),
        (
            {"period": "custom", "since": "2026-02-28", "until": "2026-03-01"},
            {"b-feb-end", "b-mar-start"},
        ),
        (
            {"period": "custom", "since": "2026-03-12", "until": "2026-03-12"},
            {"b-unpriced", "a-demo"},
        ),
    ],
    ids=["default", "this-month", "today", "last-7-days", "last-month", "custom", "one-day"],
)
def test_it_reports_the_chosen_period(
    operator: Client, ledger: Any, params: dict[str, str], names: set[str]
) -> None:
    report = report_from(operator, **params)
    assert totals_of(report) == expected_totals(names)


@pytest.mark.django_db
def test_a_custom_range_includes_both_whole_days(operator: Client, ledger: Any) -> None:
    report = report_from(operator, period="custom", since="2026-02-28", until="2026-03-01")
    assert report.start == at("2026-02-28 00:00")
    assert report.end == at("2026-03-02 00:00")
    assert report.totals.cost == Decimal("0.006")


@pytest.mark.django_db
def test_dates_are_ignored_outside_the_custom_period(operator: Client, ledger: Any) -> None:
    report = report_from(operator, period="today", since="2026-01-01", until="2026-01-31")
    assert totals_of(report) == expected_totals({"a-today-1", "a-today-2", "b-today"})
    assert "since" not in report.filters.querystring


# --- Filters --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"provider": "openai"}, {"a-today-1", "b-today", "c-deleted"}),
        ({"model": "claude-sonnet-4"}, {"a-today-2", "b-mar-start"}),
        ({"user": "alice@example.com"}, {"a-today-1", "a-today-2", "a-demo"}),
        ({"user": "  ALICE@Example.com "}, {"a-today-1", "a-today-2", "a-demo"}),
        ({"user": "carol@example.com"}, {"c-deleted"}),
        ({"key_source": "user"}, {"a-today-1", "b-unpriced", "b-mar-start"}),
        ({"key_source": "server"}, {"a-today-2", "b-today", "c-deleted"}),
        ({"key_source": "none"}, {"a-demo"}),
        ({"provider": "openai", "key_source": "server", "user": "bob@example.com"}, {"b-today"}),
        ({"provider": "anthropic", "model": "gpt-4o"}, set()),
    ],
    ids=[
        "provider",
        "model",
        "user",
        "user-any-case",
        "deleted-user",
        "user-key",
        "server-key",
        "no-key",
        "combined",
        "nothing-matches",
    ],
)
def test_it_filters_the_calls(
    operator: Client, ledger: Any, params: dict[str, str], names: set[str]
) -> None:
    report = report_from(operator, **params)
    assert totals_of(report) == expected_totals(names)


@pytest.mark.django_db
def test_an_unknown_provider_is_a_form_error(operator: Client, ledger: Any) -> None:
    response = operator.get(REPORT, {"provider": "nope"})
    assert response.status_code == 200
    assert response.context["report"] is None
    assert "provider" in response.context["form"].errors


# --- Groupings ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("group", "rows"),
    [
        (
            "user",
            [
                (("carol@example.com",), "0.050000", 1),
                (("alice@example.com",), "0.030000", 3),
                (("bob@example.com",), "0.007000", 3),
            ],
        ),
        (
            "provider",
            [
                (("openai",), "0.063000", 3),
                (("anthropic",), "0.024000", 2),
                (("demo",), "0.000000", 1),
                (("google",), "0.000000", 1),
            ],
        ),
        (
            "model",
            [
                (("openai", "gpt-4o"), "0.063000", 3),
                (("anthropic", "claude-sonnet-4"), "0.024000", 2),
                (("demo", "demo-echo"), "0.000000", 1),
                (("google", "gemini-2.5-flash"), "0.000000", 1),
            ],
        ),
        (
            "day",
            [
                (("2026-03-01",), "0.004000", 1),
                (("2026-03-02",), "0.050000", 1),
                (("2026-03-12",), "0.000000", 2),
                (("2026-03-15",), "0.033000", 3),
            ],
        ),
        ("month", [(("2026-03",), "0.087000", 7)]),
    ],
)
def test_it_groups_this_month_by(
    operator: Client, ledger: Any, group: str, rows: list[Any]
) -> None:
    report = report_from(operator, group=group)
    assert rows_of(report) == rows
    assert totals_of(report) == expected_totals(THIS_MONTH)


@pytest.mark.django_db
def test_it_groups_a_long_range_by_month(operator: Client, ledger: Any) -> None:
    report = report_from(
        operator, period="custom", since="2026-01-01", until="2026-03-31", group="month"
    )
    assert rows_of(report) == [
        (("2026-01",), "0.100000", 1),
        (("2026-02",), "0.003000", 2),
        (("2026-03",), "0.087000", 7),
    ]
    assert report.totals.cost == Decimal("0.190000")


@pytest.mark.django_db
def test_days_are_utc_days(operator: Client, ledger: Any) -> None:
    # 23:59:59 on the last of February and midnight on 1 March fall on two days.
    report = report_from(
        operator, period="custom", since="2026-02-28", until="2026-03-01", group="day"
    )
    assert rows_of(report) == [(("2026-02-28",), "0.002000", 1), (("2026-03-01",), "0.004000", 1)]


@pytest.mark.django_db
def test_each_row_counts_its_unpriced_calls(operator: Client, ledger: Any) -> None:
    report = report_from(operator, group="user")
    unpriced = {r.group[0]: r.unpriced for r in report.rows}
    assert unpriced == {"carol@example.com": 0, "alice@example.com": 0, "bob@example.com": 1}
    assert report.totals.unpriced == 1
    assert b"1 call could not be priced" in operator.get(REPORT).content


@pytest.mark.django_db
def test_the_totals_row_sums_the_rows_and_matches_the_ledger(operator: Client, ledger: Any) -> None:
    report = report_from(operator, group="model")
    assert report.totals.group == ("Total", "")
    assert report.totals.requests == sum(r.requests for r in report.rows)
    assert report.totals.cost == sum((r.cost for r in report.rows), Decimal(0))
    assert report.totals.cost == Decimal("0.087")
    assert report.totals.input_tokens == 1000 + 2000 + 500 + 300 + 10 + 4000 + 100
    assert report.totals.reasoning_tokens == 120


@pytest.mark.django_db
def test_each_row_links_one_level_down(operator: Client, ledger: Any) -> None:
    report = report_from(operator, group="user")
    alice_row = next(r for r in report.rows if r.group == ("alice@example.com",))
    assert alice_row.drill is not None
    assert alice_row.drill.params() == {"user": "alice@example.com", "group": "model"}
    html = operator.get(REPORT).content.decode()
    assert 'href="?user=alice%40example.com&amp;group=model"' in html


@pytest.mark.django_db
def test_it_runs_one_query_for_the_rows_and_one_for_the_chart(
    ledger: Any, django_assert_num_queries: Any
) -> None:
    for group in ("user", "provider", "model", "month"):
        with django_assert_num_queries(2):
            usage_report(ReportFilters(group=group))
    with django_assert_num_queries(1):  # the rows are the chart's series
        usage_report(ReportFilters(group="day"))
    with django_assert_num_queries(1):
        usage_report(ReportFilters(group="user"), chart=False)


# --- The chart --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_chart_has_a_bar_for_every_day_of_the_period(operator: Client, ledger: Any) -> None:
    response = operator.get(REPORT)
    report = response.context["report"]
    assert report.chart_unit == "day"
    assert len(report.chart) == 31
    by_day = {p.start.isoformat(): p.cost for p in report.chart}
    assert by_day["2026-03-02"] == Decimal("0.05")
    assert by_day["2026-03-15"] == Decimal("0.033")
    assert by_day["2026-03-20"] == 0
    html = response.content.decode()
    assert html.count('<rect class="report-bar"') == 31
    # The busiest day is the full height of the chart.
    assert "<title>2026-03-02: $0.05</title>" in html
    assert 'y="0.0" width="8" height="100.0"' in html


@pytest.mark.django_db
def test_a_long_range_is_charted_by_month(operator: Client, ledger: Any) -> None:
    report = report_from(operator, period="custom", since="2025-11-01", until="2026-03-31")
    assert report.chart_unit == "month"
    assert [(p.start.isoformat(), p.cost) for p in report.chart] == [
        ("2025-11-01", 0),
        ("2025-12-01", 0),
        ("2026-01-01", Decimal("0.1")),
        ("2026-02-01", Decimal("0.003")),
        ("2026-03-01", Decimal("0.087")),
    ]


@pytest.mark.django_db
def test_the_page_keeps_to_the_content_security_policy(operator: Client, ledger: Any) -> None:
    response = operator.get(REPORT)
    html = response.content.decode()
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag, tag
    assert " style=" not in html
    assert "/static/css/admin-report.css" in html
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]


# --- Bad input ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"period": "custom", "since": "2026-02-30", "until": "2026-03-01"}, "since", "valid date"),
        ({"period": "custom", "since": "yesterday", "until": "2026-03-01"}, "since", "valid date"),
        (
            {"period": "custom", "since": "2026-03-05", "until": "2026-03-01"},
            "until",
            "ends before",
        ),
        ({"period": "custom", "since": "2026-03-05"}, "until", "last day"),
        ({"period": "custom"}, "since", "first day"),
        ({"period": "custom", "since": "1000-01-01", "until": "2026-03-01"}, "until", "ten years"),
        ({"period": "custom", "since": "2026-01-01", "until": "9999-12-31"}, "until", "earlier"),
        ({"period": "forever"}, "period", "valid choice"),
        ({"group": "planet"}, "group", "valid choice"),
    ],
)
def test_bad_filters_show_a_message_on_the_page_not_a_500(
    operator: Client, ledger: Any, params: dict[str, str], field: str, message: str
) -> None:
    response = operator.get(REPORT, params)
    assert response.status_code == 200
    assert response.context["report"] is None
    errors = response.context["form"].errors
    assert message in " ".join(errors[field])
    html = response.content.decode()
    assert "Correct the filters above" in html
    assert 'class="errorlist' in html


@pytest.mark.django_db
def test_the_csv_of_bad_filters_is_a_400(operator: Client, ledger: Any) -> None:
    response = operator.get(REPORT_CSV, {"period": "custom", "since": "2026-13-01"})
    assert response.status_code == 400
    assert b"since" in response.content


# --- The CSV is the page --------------------------------------------------------


def csv_table(response: Any) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.reader(io.StringIO(response.content.decode())))


def html_table(html: str) -> list[list[str]]:
    """The report table's cells as text, thousands separators and $ signs removed."""
    table = re.search(r'<table id="report-table".*?</table>', html, re.S)
    assert table is not None
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(0), re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)
        rows.append(
            [
                unescape(re.sub(r"<[^>]+>", "", c)).strip().replace(",", "").lstrip("$")
                for c in cells
            ]
        )
    return rows


def as_numbers(table: list[list[str]]) -> list[list[Any]]:
    """Numbers as values: the page shows money as people read it ($0.05), the CSV
    to the micro-dollar (0.050000); both must be the same amounts."""
    return [[Decimal(c) if re.fullmatch(r"-?\d+(\.\d+)?", c) else c for c in row] for row in table]


@pytest.mark.django_db
@pytest.mark.parametrize("group", ["user", "provider", "model", "day", "month"])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"provider": "openai"},
        {"period": "custom", "since": "2026-01-01", "until": "2026-03-31"},
    ],
    ids=["default", "filtered", "custom"],
)
def test_the_csv_holds_exactly_what_the_page_shows(
    operator: Client, ledger: Any, group: str, params: dict[str, str]
) -> None:
    page = operator.get(REPORT, {**params, "group": group})
    report = page.context["report"]
    link = re.search(r'href="([^"]+)" id="report-csv"', page.content.decode())
    assert link is not None
    download = csv_table(operator.get(unescape(link.group(1))))

    assert download == report.table()
    assert as_numbers(download) == as_numbers(html_table(page.content.decode()))
    assert download[0] == [*report.group_columns, *reports.METRIC_COLUMNS]
    assert len(download) == len(report.rows) + 2  # the header and the totals
    assert download[-1][0] == "Total"


@pytest.mark.django_db
def test_money_in_the_csv_has_six_places(operator: Client, ledger: Any) -> None:
    rows = csv_table(operator.get(REPORT_CSV, {"group": "provider"}))
    cost = rows[0].index("Cost (USD)")
    assert [r[cost] for r in rows[1:]] == [
        "0.063000",
        "0.024000",
        "0.000000",
        "0.000000",
        "0.087000",
    ]
    assert all(re.fullmatch(r"\d+\.\d{6}", r[cost]) for r in rows[1:])


@pytest.mark.django_db
def test_the_csv_defuses_spreadsheet_formulas(
    operator: Client, alice: Any, frozen_now: Any
) -> None:
    UsageRecord.objects.create(
        user=alice,
        user_email=alice.email,
        provider="compatible",
        model='=HYPERLINK("http://evil.example","x")',
        key_source="user",
        unpriced=True,
        outcome="complete",
        created=NOW,
    )
    rows = csv_table(operator.get(REPORT_CSV, {"group": "model"}))
    assert rows[1][:2] == ["compatible", '\'=HYPERLINK("http://evil.example","x")']


# What spreadsheets run as formulas, and what they only look like.
HOSTILE = ["=1+1", "+1", "-1", "@A1", "\t1", "\r1", "\n=1", " =1", " \t@A1", "\uff1d1", "\uff0d1"]
HARMLESS = ["gpt-4o", "a=b", "x-1@example.com", "1"]


@pytest.mark.django_db
@pytest.mark.parametrize("value", HOSTILE + HARMLESS)
@pytest.mark.parametrize("group", ["user", "provider", "model"])
def test_no_cell_of_the_csv_starts_a_formula(
    operator: Client, frozen_now: Any, value: str, group: str
) -> None:
    UsageRecord.objects.create(
        user=None,
        user_email=value,
        provider=value,
        model=value,
        key_source="user",
        outcome="complete",
        created=NOW,
    )
    rows = csv_table(operator.get(REPORT_CSV, {"group": group}))
    expected = f"'{value}" if value in HOSTILE else value
    assert rows[1][: len(rows[0]) - len(reports.METRIC_COLUMNS)] == (
        [expected, expected] if group == "model" else [expected]
    )


# --- Who may see it -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", [REPORT, REPORT_CSV])
def test_anonymous_visitors_are_sent_to_sign_in(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert "login" in response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", [REPORT, REPORT_CSV])
def test_users_who_are_not_staff_cannot_reach_it(client: Client, alice: Any, url: str) -> None:
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 302
    assert "login" in response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", [REPORT, REPORT_CSV])
def test_staff_without_the_ledger_permission_are_refused(client: Client, url: str) -> None:
    clerk = make_user("clerk@example.com")
    clerk.is_staff = True
    clerk.save()
    client.force_login(clerk)
    assert client.get(url).status_code == 403

    clerk.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_the_report_is_linked_from_the_ledger_and_the_admin_index(operator: Client) -> None:
    assert f'href="{REPORT}"' in operator.get("/admin/conversations/usagerecord/").content.decode()
    assert f'href="{REPORT}"' in operator.get("/admin/").content.decode()
    assert f'href="{REPORT}"' in operator.get("/admin/conversations/").content.decode()


@pytest.mark.django_db
def test_the_index_leaves_the_report_out_for_staff_who_cannot_see_the_ledger(
    client: Client,
) -> None:
    clerk = make_user("clerk@example.com")
    clerk.is_staff = True
    clerk.save()
    clerk.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client.force_login(clerk)
    assert REPORT not in client.get("/admin/").content.decode()


# --- The ledger -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_ledger_lists_calls_read_only(operator: Client, ledger: dict[str, Any]) -> None:
    response = operator.get("/admin/conversations/usagerecord/", {"q": "carol"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "carol@example.com" in html
    assert "4,000 in / 1,000 out (1,000 cached)" in html
    assert "alice@example.com" not in html

    record = ledger["c-deleted"]
    change_url = f"/admin/conversations/usagerecord/{record.pk}/change/"
    assert operator.get(change_url).status_code == 200  # viewable
    assert operator.post(change_url, {"cost": "0"}).status_code == 403
    assert operator.get("/admin/conversations/usagerecord/add/").status_code == 403
    delete_url = f"/admin/conversations/usagerecord/{record.pk}/delete/"
    assert operator.post(delete_url, {"post": "yes"}).status_code == 403
    record.refresh_from_db()
    assert record.cost == Decimal("0.05")


@pytest.mark.django_db
def test_the_ledger_filters_by_provider(operator: Client, ledger: Any) -> None:
    response = operator.get("/admin/conversations/usagerecord/", {"provider": "anthropic"})
    emails = sorted(r.user_email for r in response.context["cl"].result_list)
    assert emails == ["alice@example.com", "bob@example.com", "bob@example.com"]


@pytest.mark.django_db
def test_the_ledger_list_offers_no_bulk_delete(operator: Client, ledger: Any) -> None:
    response = operator.get("/admin/conversations/usagerecord/")
    assert "delete_selected" not in response.content.decode()
