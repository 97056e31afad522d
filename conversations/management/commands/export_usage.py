"""Export the usage ledger (one row per provider call) as CSV or JSON Lines.

    manage.py export_usage [--since DATE] [--until DATE] [--user EMAIL]
                           [--provider P] [--format csv|jsonl] [--output FILE]

Dates are YYYY-MM-DD in UTC and both ends are inclusive. Times are written in UTC
as ISO 8601 with a "Z" suffix (and microseconds when there are any); costs as
decimal strings with 6 places (empty in CSV, null in JSON Lines, when the call
could not be priced).

The ledger grows without bound, so rows are streamed from the database (a
server-side cursor on PostgreSQL) and written one by one: memory stays the same
whatever the number of rows.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from accounts.models import User
from conversations.models import Status, UsageRecord, UsageRecordQuerySet
from llmchat.csvcells import safe_cell
from providers.registry import PROVIDER_NAMES

# The columns, in order; "time" is the record's `created`.
COLUMNS = (
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
)
# The model fields read for them, in the same order.
FIELD_NAMES = tuple("created" if c == "time" else c for c in COLUMNS)

CHUNK_SIZE = 2000
PROGRESS_EVERY = 100_000
# The exit status of a Unix tool whose reader went away (stopped by SIGPIPE), as
# shells report it: `export_usage | head -1` ends like `cat big.csv | head -1`.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

# date.fromisoformat also takes "20261124" and week dates; the issue promises one form.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


class _StdoutText:
    """Django's OutputWrapper ends every write with a newline; csv and our JSON lines
    bring their own line endings, so pass text through as it is."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str, /) -> int:
        self._out.write(text, ending="")
        return len(text)


def parse_day(value: str, option: str) -> date:
    if not _DATE_RE.fullmatch(value):
        raise CommandError(f"{option} must be a date as YYYY-MM-DD, not {value!r}.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} {value!r} is not a valid date.") from None


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def cost_text(cost: Decimal | None) -> str | None:
    # Fixed 6 places, as stored, whatever the backend hands back (SQLite may trim zeros).
    return None if cost is None else f"{cost:.6f}"


def as_record(values: tuple[Any, ...]) -> dict[str, Any]:
    """One ledger row as JSON-ready values, keyed by column."""
    record = dict(zip(COLUMNS, values, strict=True))
    record["time"] = iso_utc(record["time"])
    record["cost"] = cost_text(record["cost"])
    return record


_TIME, _COST = map(COLUMNS.index, ("time", "cost"))
_BOOLEAN_COLUMNS = ("unpriced", "estimated", "fallback_price")
_BOOLEANS = tuple(map(COLUMNS.index, _BOOLEAN_COLUMNS))
# The columns holding text, some of it typed by users (emails, model names): in CSV
# each goes through safe_cell, so that a spreadsheet does not run it as a formula.
_TEXT_COLUMNS = ("user_email", "provider", "model", "key_source", "outcome")
_TEXT = tuple(map(COLUMNS.index, _TEXT_COLUMNS))


def csv_cells(values: tuple[Any, ...]) -> list[Any]:
    """One ledger row as CSV cells (the csv module writes None as an empty cell)."""
    cells = list(values)
    for i in _TEXT:
        cells[i] = safe_cell(cells[i])
    cells[_TIME] = iso_utc(cells[_TIME])
    cells[_COST] = cost_text(cells[_COST])
    for i in _BOOLEANS:
        cells[i] = "true" if cells[i] else "false"
    return cells


def write_csv(rows: Iterable[tuple[Any, ...]], out: _Writable, tick: Callable[[], None]) -> None:
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for values in rows:
        writer.writerow(csv_cells(values))
        tick()


def write_jsonl(rows: Iterable[tuple[Any, ...]], out: _Writable, tick: Callable[[], None]) -> None:
    for values in rows:
        out.write(json.dumps(as_record(values), separators=(",", ":")) + "\n")
        tick()


class Command(BaseCommand):
    help = "Export the usage ledger (one row per provider call) as CSV or JSON Lines."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--since", metavar="DATE", help="First day to include (YYYY-MM-DD, UTC)."
        )
        parser.add_argument(
            "--until", metavar="DATE", help="Last day to include, whole (YYYY-MM-DD, UTC)."
        )
        parser.add_argument(
            "--user", metavar="EMAIL", help="Only this user's calls (email, any case)."
        )
        parser.add_argument(
            "--provider", choices=PROVIDER_NAMES, default=None, help="Only this provider's calls."
        )
        parser.add_argument(
            "--format", choices=["csv", "jsonl"], default="csv", help="Default: csv, with a header."
        )
        parser.add_argument(
            "--output", metavar="FILE", default=None, help="Write here instead of stdout."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        records = self._queryset(opts)
        # A call still in flight has only its opening estimate: exported later, once
        # it ended, with what it cost (its row keeps the time it started).
        in_flight = records.filter(outcome=Status.GENERATING)
        if in_flight.exists():
            self.stderr.write(
                f"{in_flight.count():,} call(s) in this range are still in flight and are "
                "left out; export the range again once they have ended."
            )
            records = records.exclude(outcome=Status.GENERATING)
        output: str | None = opts["output"]
        writer = write_csv if opts["format"] == "csv" else write_jsonl
        rows = self._rows(records)
        write = functools.partial(writer, rows)
        if output is None:
            if not self._write_stdout(write, rows):
                raise SystemExit(EXIT_BROKEN_PIPE)
            return

        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count % PROGRESS_EVERY == 0:
                self.stderr.write(f"{count:,} rows so far...")

        # newline="": the csv module writes its own \r\n line endings.
        with open(output, "w", encoding="utf-8", newline="") as file:
            write(file, tick)
        self.stderr.write(f"Exported {count:,} row{'' if count == 1 else 's'} to {output}")

    def _queryset(self, opts: dict[str, Any]) -> UsageRecordQuerySet:
        since = None if opts["since"] is None else parse_day(opts["since"], "--since")
        until = None if opts["until"] is None else parse_day(opts["until"], "--until")
        if since and until and since > until:
            raise CommandError(f"--since {since} is after --until {until}.")

        records = UsageRecord.objects.between(
            midnight(since) if since else None,
            # Inclusive of the whole day: up to the next day's midnight.
            midnight(until + timedelta(days=1)) if until else None,
        )
        if opts["user"] is not None:
            users = User.objects.filter(email__iexact=opts["user"].strip())
            if not users.exists():
                raise CommandError(f"No user with the email {opts['user']!r}.")
            records = records.filter(user__in=users)
        if opts["provider"] is not None:
            records = records.filter(provider=opts["provider"])
        return records.order_by("created", "id")

    def _rows(self, records: UsageRecordQuerySet) -> Generator[tuple[Any, ...]]:
        # iterator(): no result cache, and on PostgreSQL a server-side cursor, so
        # only one chunk of rows is ever in memory.
        yield from records.values_list(*FIELD_NAMES).iterator(chunk_size=CHUNK_SIZE)

    def _write_stdout(
        self,
        write: Callable[[_Writable, Callable[[], None]], None],
        rows: Generator[tuple[Any, ...]],
    ) -> bool:
        """Write the export to stdout; False when the reader went away before its end
        (`export_usage | head -1`)."""
        try:
            write(_StdoutText(self.stdout), lambda: None)
            self.stdout.flush()
        except BrokenPipeError:
            pass
        else:
            return True
        # Closed now, while the database connection is still open: on PostgreSQL
        # this closes the server-side cursor.
        rows.close()
        # Python flushes stdout once more at exit, into the same closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
