"""manage.py export_usage: the usage ledger as CSV or JSON Lines, filtered and streamed."""

import csv
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum

from conversations.management.commands import export_usage
from conversations.models import Conversation, UsageRecord

BASE_DIR = Path(__file__).resolve().parents[2]
PROVIDERS = ("openai", "anthropic", "google", "compatible", "demo")
FIRST_DAY = date(2026, 11, 20)
DAYS = 5
HEADER = [
    "id",
    "time",
    "user_email",
    "user_id",
    "provider",
    "model",
    "key_source",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "unpriced",
    "estimated",
    "fallback_price",
    "outcome",
    "conversation_id",
]


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class Ledger:
    """What the test put in the ledger, to compute expected answers without the command."""

    records: list[UsageRecord]
    conversation: Conversation

    def count(
        self,
        since: date | None = None,
        until: date | None = None,
        email: str | None = None,
        provider: str | None = None,
    ) -> int:
        return sum(
            1
            for r in self.records
            if (since is None or r.created >= midnight(since))
            and (until is None or r.created < midnight(until + timedelta(days=1)))
            and (email is None or (r.user is not None and r.user.email == email))
            and (provider is None or r.provider == provider)
        )


@pytest.fixture
def ledger(alice: Any, bob: Any) -> Ledger:
    """300 calls by Alice and Bob over five days, every provider, some unpriced
    (no cost) and some estimated, with records on both edges of every day; and
    one call by an account deleted since (no user, only the email snapshot)."""
    conversation = Conversation.objects.create(user=alice, provider="openai", model="gpt-5")
    records = []
    for i in range(300):
        user = bob if i % 3 == 0 else alice
        day = FIRST_DAY + timedelta(days=i % DAYS)
        edge = i // DAYS % 4  # every day gets calls on both of its edges
        if edge == 0:
            created = midnight(day)  # the first instant of the day
        elif edge == 1:
            created = midnight(day) + timedelta(days=1, microseconds=-1)  # the last one
        else:
            created = midnight(day) + timedelta(hours=i % 24, minutes=i % 60, seconds=i % 7)
        unpriced = i % 7 == 0
        records.append(
            UsageRecord(
                user=user,
                user_email=user.email,
                conversation=conversation if user == alice and i % 2 else None,
                provider=PROVIDERS[i % len(PROVIDERS)],
                model=f"model-{i % 4}",
                key_source="user" if i % 2 else "server",
                input_tokens=1000 + i,
                cached_tokens=i % 50,
                cache_write_tokens=i % 30,
                output_tokens=200 + i,
                reasoning_tokens=i % 20,
                cost=None if unpriced else Decimal("0.000001") * (i * 37 % 1000 + 1) + i % 3,
                unpriced=unpriced,
                estimated=i % 4 == 0,
                outcome="complete" if i % 11 else "partial",
                created=created,
            )
        )
    records.append(
        UsageRecord(
            user=None,
            user_email="gone@example.com",
            provider="demo",
            model="demo-echo",
            key_source="none",
            cost=Decimal("0.5"),
            outcome="complete",
            created=midnight(FIRST_DAY) + timedelta(hours=12),
        )
    )
    UsageRecord.objects.bulk_create(records)
    return Ledger(records, conversation)


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_usage", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def csv_rows(*args: str) -> list[dict[str, str]]:
    text, _ = export(*args)
    return list(csv.DictReader(StringIO(text)))


def jsonl_rows(*args: str) -> list[dict[str, Any]]:
    text, _ = export("--format", "jsonl", *args)
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.django_db
def test_every_call_is_exported_once_in_order_of_time_then_id(ledger: Ledger) -> None:
    rows = csv_rows()
    assert len(rows) == len(ledger.records) == 301
    expected = list(UsageRecord.objects.order_by("created", "id").values_list("id", flat=True))
    assert [int(r["id"]) for r in rows] == expected
    # Several calls share a created time (the edges of each day): ids break the tie.
    keys = [(datetime.fromisoformat(r["time"]), int(r["id"])) for r in rows]
    assert len({moment for moment, _ in keys}) < len(keys)
    assert keys == sorted(keys)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("since", "until"),
    [
        (date(2026, 11, 21), None),
        (None, date(2026, 11, 21)),
        (date(2026, 11, 21), date(2026, 11, 21)),
        (date(2026, 11, 21), date(2026, 11, 23)),
        (date(2026, 11, 24), date(2026, 12, 31)),
        (date(2026, 11, 25), None),
        (None, date(2026, 11, 19)),
    ],
)
def test_since_and_until_include_their_whole_days(
    ledger: Ledger, since: date | None, until: date | None
) -> None:
    args = []
    if since:
        args += ["--since", since.isoformat()]
    if until:
        args += ["--until", until.isoformat()]
    rows = csv_rows(*args)
    assert len(rows) == ledger.count(since=since, until=until)
    for row in rows:
        moment = datetime.fromisoformat(row["time"])
        assert since is None or moment >= midnight(since)
        assert until is None or moment < midnight(until + timedelta(days=1))


@pytest.mark.django_db
def test_a_single_day_includes_its_first_and_last_instant(ledger: Ledger) -> None:
    times = {r["time"] for r in csv_rows("--since", "2026-11-22", "--until", "2026-11-22")}
    assert "2026-11-22T00:00:00Z" in times
    assert "2026-11-22T23:59:59.999999Z" in times
    assert "2026-11-23T00:00:00Z" not in times
    assert "2026-11-21T23:59:59.999999Z" not in times


@pytest.mark.django_db
def test_the_user_filter_matches_the_email_in_any_case(ledger: Ledger) -> None:
    rows = csv_rows("--user", "Alice@Example.COM")
    assert len(rows) == ledger.count(email="alice@example.com") == 200
    assert {r["user_email"] for r in rows} == {"alice@example.com"}
    assert len(csv_rows("--user", "bob@example.com")) == ledger.count(email="bob@example.com")


@pytest.mark.django_db
@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_provider_filter_keeps_that_providers_calls(ledger: Ledger, provider: str) -> None:
    rows = csv_rows("--provider", provider)
    assert len(rows) == ledger.count(provider=provider) > 0
    assert {r["provider"] for r in rows} == {provider}


@pytest.mark.django_db
def test_filters_combine(ledger: Ledger) -> None:
    rows = csv_rows(
        "--since",
        "2026-11-21",
        "--until",
        "2026-11-23",
        "--user",
        "bob@example.com",
        "--provider",
        "anthropic",
    )
    expected = ledger.count(
        since=date(2026, 11, 21),
        until=date(2026, 11, 23),
        email="bob@example.com",
        provider="anthropic",
    )
    assert len(rows) == expected > 0
    assert {(r["user_email"], r["provider"]) for r in rows} == {("bob@example.com", "anthropic")}


@pytest.mark.django_db
def test_csv_has_a_header_row_and_every_value_of_the_record(
    ledger: Ledger, alice: Any, bob: Any
) -> None:
    text, _ = export()
    lines = text.splitlines()
    assert lines[0].split(",") == HEADER
    rows = {int(r["id"]): r for r in csv.DictReader(StringIO(text))}

    # i = 1: Alice's, on the first instant of the 21st, priced, not estimated, in a conversation.
    priced = UsageRecord.objects.get(input_tokens=1001)
    assert priced.conversation is not None
    assert (priced.user, priced.created) == (alice, datetime(2026, 11, 21, tzinfo=UTC))
    assert rows[priced.pk] == {
        "id": str(priced.pk),
        "time": "2026-11-21T00:00:00Z",
        "user_email": "alice@example.com",
        "user_id": str(alice.pk),
        "provider": priced.provider,
        "model": priced.model,
        "key_source": "user",
        "input_tokens": str(priced.input_tokens),
        "cached_tokens": str(priced.cached_tokens),
        "cache_write_tokens": str(priced.cache_write_tokens),
        "output_tokens": str(priced.output_tokens),
        "reasoning_tokens": str(priced.reasoning_tokens),
        "cost": f"{priced.cost:.6f}",
        "unpriced": "false",
        "estimated": "false",
        "fallback_price": "false",
        "outcome": priced.outcome,
        "conversation_id": str(ledger.conversation.pk),
    }
    assert len(rows[priced.pk]["cost"].split(".")[1]) == 6

    unpriced = UsageRecord.objects.filter(unpriced=True, estimated=True, user=bob).first()
    assert unpriced is not None
    row = rows[unpriced.pk]
    assert (row["cost"], row["unpriced"], row["estimated"]) == ("", "true", "true")
    assert row["conversation_id"] == ""

    gone = rows[UsageRecord.objects.get(user=None).pk]
    assert (gone["user_email"], gone["user_id"], gone["cost"]) == (
        "gone@example.com",
        "",
        "0.500000",
    )


@pytest.mark.django_db
def test_jsonl_lines_parse_and_their_costs_add_up_to_the_ledger_exactly(ledger: Ledger) -> None:
    rows = jsonl_rows()
    assert len(rows) == 301
    assert all(list(r) == HEADER for r in rows)
    total = sum(Decimal(r["cost"]) for r in rows if r["cost"] is not None)
    assert total == UsageRecord.objects.aggregate(total=Sum("cost"))["total"]
    assert total != 0

    unpriced = [r for r in rows if r["unpriced"]]
    assert unpriced
    assert all(r["cost"] is None for r in unpriced)
    gone = next(r for r in rows if r["user_email"] == "gone@example.com")
    assert gone["user_id"] is None
    assert gone["cost"] == "0.500000"
    assert isinstance(gone["input_tokens"], int)
    assert {type(r["estimated"]) for r in rows} == {bool}
    assert {r["estimated"] for r in rows} == {True, False}


# What spreadsheets run as formulas, and what they only look like. Each fits the
# shortest text column (key_source, 10 characters).
HOSTILE = ["=1+1", "+1", "-1", "@A1", "\t1", "\r1", "\n=1", " =1", " \t@A1", "\uff1d1", "\uff20A1"]
HARMLESS = ["gpt-4o", "a=b", "x-1@ex.co", "1"]
TEXT_COLUMNS = ["user_email", "provider", "model", "key_source", "outcome"]


def hostile_record(value: str) -> UsageRecord:
    return UsageRecord.objects.create(
        user=None,
        **dict.fromkeys(TEXT_COLUMNS, value),
        created=datetime(2026, 11, 22, tzinfo=UTC),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("value", HOSTILE + HARMLESS)
def test_no_text_cell_of_the_csv_starts_a_formula(db: None, value: str) -> None:
    hostile_record(value)
    (row,) = csv_rows()
    expected = f"'{value}" if value in HOSTILE else value
    assert [row[c] for c in TEXT_COLUMNS] == [expected] * len(TEXT_COLUMNS)
    (record,) = jsonl_rows()  # JSON is no spreadsheet: values as they are
    assert [record[c] for c in TEXT_COLUMNS] == [value] * len(TEXT_COLUMNS)


@pytest.mark.django_db
def test_without_output_the_export_goes_to_stdout_and_stderr_stays_quiet(ledger: Ledger) -> None:
    text, err = export("--format", "jsonl")
    assert len(text.splitlines()) == 301
    assert text.endswith("}\n")
    assert "\n\n" not in text
    assert err == ""


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_output_writes_the_file_and_reports_progress_on_stderr(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(export_usage, "PROGRESS_EVERY", 100)
    stdout_text, _ = export("--format", fmt)
    path = tmp_path / f"usage.{fmt}"

    text, err = export("--format", fmt, "--output", str(path))

    assert text == ""
    assert path.read_bytes() == stdout_text.encode()
    assert err.splitlines() == [
        "100 rows so far...",
        "200 rows so far...",
        "300 rows so far...",
        f"Exported 301 rows to {path}",
    ]


@pytest.mark.django_db
def test_the_final_line_groups_thousands(alice: Any, tmp_path: Path) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            user=alice, user_email=alice.email, provider="demo", model="m", outcome="complete"
        )
        for _ in range(1234)
    )
    _, err = export("--output", str(tmp_path / "usage.csv"))
    assert err == f"Exported 1,234 rows to {tmp_path / 'usage.csv'}\n"


@pytest.mark.django_db
def test_an_empty_export_is_just_the_header(db: None, tmp_path: Path) -> None:
    text, _ = export()
    assert text == ",".join(HEADER) + "\r\n"
    assert export("--format", "jsonl") == ("", "")
    _, err = export("--output", str(tmp_path / "usage.csv"))
    assert err == f"Exported 0 rows to {tmp_path / 'usage.csv'}\n"


@pytest.mark.django_db
def test_an_unknown_user_is_an_error(ledger: Ledger) -> None:
    with pytest.raises(CommandError, match=r"No user with the email 'carol@example\.com'"):
        export("--user", "carol@example.com")


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-30", "24/11/2026", "20261124", "soon"])
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_a_bad_date_is_an_error(db: None, option: str, value: str) -> None:
    with pytest.raises(CommandError, match=f"{option} .*{value}"):
        export(option, value)


@pytest.mark.django_db
def test_since_after_until_is_an_error(db: None) -> None:
    with pytest.raises(CommandError, match="--since 2026-11-24 is after --until 2026-11-23"):
        export("--since", "2026-11-24", "--until", "2026-11-23")


@pytest.mark.django_db
def test_an_unknown_provider_is_an_error(db: None) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'mistral'"):
        export("--provider", "mistral")


def add_calls(user: Any, n: int) -> None:
    UsageRecord.objects.bulk_create(
        (
            UsageRecord(
                user=user,
                user_email=user.email,
                provider="openai",
                model="gpt-5-mini",
                key_source="server",
                input_tokens=1200 + i,
                output_tokens=300,
                cost=Decimal("0.001234"),
                outcome="complete",
                created=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i),
            )
            for i in range(n)
        ),
        batch_size=1000,
    )


def grow_ledger_to(n: int) -> None:
    """Copy the ledger's rows into it until it holds n: INSERT ... SELECT in the
    database, since bulk_create spends ~0.1 ms of Python per row and a test has
    tens of thousands to add."""
    opts = UsageRecord._meta
    quote = connection.ops.quote_name
    # (Every concrete field has a column; the stubs' type allows None.)
    columns = ", ".join(
        quote(f.column) for f in opts.concrete_fields if f.column and not f.primary_key
    )
    table = quote(opts.db_table)
    while (count := UsageRecord.objects.count()) < n:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "  # noqa: S608 (our own names, no input)
                f"SELECT {columns} FROM {table} ORDER BY {quote('id')} LIMIT %s",
                [min(count, n - count)],
            )


def peak_memory(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.django_db
def test_memory_does_not_grow_with_the_number_of_rows(alice: Any, tmp_path: Path) -> None:
    n = 20_000
    path = tmp_path / "usage.csv"
    add_calls(alice, 2000)
    export("--output", str(path))  # warm up: imports, compiled queries, caches

    grow_ledger_to(n)
    peak_n = peak_memory(lambda: export("--output", str(path)))
    grow_ledger_to(2 * n)
    peak_2n = peak_memory(lambda: export("--output", str(path)))

    with path.open(newline="") as file:
        assert sum(1 for _ in csv.reader(file)) == 2 * n + 1
    assert peak_n < 20 * 1024 * 1024
    assert peak_2n < 1.5 * peak_n + 2 * 1024 * 1024


@pytest.mark.django_db
def test_quotes_commas_line_breaks_and_microseconds_are_written_exactly(
    db: None, tmp_path: Path
) -> None:
    odd = UsageRecord.objects.create(
        user=None,
        user_email='"odd, quoted"@example.com',
        provider="openai",
        model='model "x", \n two lines',
        key_source="user",
        cost=Decimal("12.3"),
        outcome="complete",
        created=datetime(2026, 11, 22, 1, 2, 3, 4500, tzinfo=UTC),
    )
    link = UsageRecord.objects.create(
        user=None,
        user_email="",
        provider="-1",
        model='=HYPERLINK("http://x","y, z")',
        key_source="server",
        input_tokens=7,
        outcome="partial",
        created=datetime(2026, 11, 22, 1, 2, 4, tzinfo=UTC),
    )
    expected = (
        ",".join(HEADER) + "\r\n"
        f'{odd.pk},2026-11-22T01:02:03.004500Z,"""odd, quoted""@example.com",,openai,'
        '"model ""x"", \n two lines",user,0,0,0,0,0,12.300000,false,false,false,complete,\r\n'
        f"{link.pk},2026-11-22T01:02:04Z,,,'-1,"
        '"\'=HYPERLINK(""http://x"",""y, z"")",server,7,0,0,0,0,,false,false,false,partial,\r\n'
    )
    text, _ = export()
    assert text == expected
    call_command("export_usage", "--output", str(tmp_path / "usage.csv"), stderr=StringIO())
    assert (tmp_path / "usage.csv").read_bytes() == expected.encode()


def database_url() -> str:
    """The test database, for a manage.py in another process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = quote(db["PASSWORD"] or "", safe="")
    return f"postgres://{db['USER']}:{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)  # committed, for the other process to read
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_reader_that_stops_early_ends_the_export_quietly(alice: Any, fmt: str) -> None:
    add_calls(alice, 5000)  # far more than a pipe's buffer
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "ENV_FILE": "",
        "DEBUG": "true",
        "DATABASE_URL": database_url(),
    }
    # `manage.py export_usage | head -1`: read one line, then close the pipe.
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "export_usage", "--format", fmt],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=60)
    assert first.startswith(b"id,time," if fmt == "csv" else b'{"id":')
    assert stderr.decode() == ""  # no traceback, nothing "ignored"
    assert proc.returncode == 128 + signal.SIGPIPE  # as a shell reports `cat` stopped so


def call(user: Any, **fields: Any) -> UsageRecord:
    """One call of the user's in the ledger: gpt-4o on their own key, complete,
    unless told otherwise."""
    defaults: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o",
        "key_source": "user",
        "cost": Decimal("0.1"),
        "outcome": "complete",
    }
    return UsageRecord.objects.create(user=user, user_email=user.email, **{**defaults, **fields})


@pytest.mark.django_db
def test_a_call_priced_at_a_fallback_is_flagged(alice: Any) -> None:
    call(alice, model="o1-pro", key_source="server", cost=Decimal("0.5"), fallback_price=True)
    assert [r["fallback_price"] for r in csv_rows()] == ["true"]
    assert [r["fallback_price"] for r in jsonl_rows()] == [True]


@pytest.mark.django_db
def test_calls_still_in_flight_are_left_out_and_said_so(alice: Any) -> None:
    call(alice)
    call(alice, estimated=True, outcome="generating")
    text, err = export()
    assert [r["outcome"] for r in csv.DictReader(StringIO(text))] == ["complete"]
    assert "1 call(s) in this range are still in flight and are left out" in err
    assert [r["outcome"] for r in jsonl_rows()] == ["complete"]
