"""Time the admin usage report (conversations.reports.usage_report) on a big ledger.

    DEBUG=true DATABASE_URL=postgres://postgres@127.0.0.1:5432/llmchat_bench \\
        .venv/bin/python bench/reports.py --rows 1000000
    ... bench/reports.py --cleanup        # delete what it generated

Creates the schema if needed (migrate), adds N UsageRecord rows spread over the
last --days days (bulk_create, in batches) for a few generated
users, then runs the report for each grouping over the default period (this UTC
month) and prints the wall time and query count of each. Not a test: it prints
numbers and never fails on timing. Generated users and rows are recognised by the
"@bench.invalid" email domain, which --cleanup deletes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")
# The pages it times would log a line per request between the table's rows.
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import User  # noqa: E402
from conversations import reports  # noqa: E402
from conversations.models import UsageRecord  # noqa: E402

DOMAIN = "@bench.invalid"
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "o3-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("compatible", "llama3.1:8b"),
    ("demo", "demo-echo"),
]
KEY_SOURCES = ["user", "server", "none"]
# The fields generate() fills, in order (the rest take their defaults).
COLUMNS = (
    "user",
    "user_email",
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
    "outcome",
    "created",
)


def bench_users(count: int) -> list[tuple[int, str]]:
    existing = {u.email: u.pk for u in User.objects.filter(email__endswith=DOMAIN)}
    missing = [f"bench-{i:03d}{DOMAIN}" for i in range(count)]
    new = [User(email=email) for email in missing if email not in existing]
    for user in new:
        user.set_unusable_password()
    User.objects.bulk_create(new)
    users = {u.email: u.pk for u in User.objects.filter(email__in=missing)}
    return [(users[email], email) for email in missing]


def generate(rows: int, users: list[tuple[int, str]], days: int, seed: int) -> Iterator[tuple]:
    """Ledger rows as COLUMNS tuples: a few heavy users, most calls priced."""
    rnd = random.Random(seed)  # noqa: S311  (test data, not secrets)
    now = timezone.now()
    span = days * 86400
    weights = [1 / (i + 1) for i in range(len(users))]  # a long tail of light users
    user_choices = rnd.choices(users, weights=weights, k=rows)
    for i in range(rows):
        user_id, email = user_choices[i]
        provider, model = MODELS[rnd.randrange(len(MODELS))]
        key_source = "none" if provider == "demo" else KEY_SOURCES[rnd.randrange(2)]
        input_tokens = rnd.randrange(20, 20_000)
        output_tokens = rnd.randrange(1, 2_000)
        unpriced = provider == "compatible" or rnd.random() < 0.01
        cost = None if unpriced else Decimal(rnd.randrange(0, 200_000)) / 1_000_000
        yield (
            user_id,
            email,
            provider,
            model,
            key_source,
            input_tokens,
            rnd.randrange(0, input_tokens // 2 + 1),
            0,
            output_tokens,
            rnd.randrange(0, output_tokens) if model.startswith(("o3", "gemini-2.5-pro")) else 0,
            cost,
            unpriced,
            rnd.random() < 0.005,
            "complete",
            now - timedelta(seconds=rnd.randrange(span)),
        )


def insert(rows: Iterator[tuple], total: int) -> None:
    batch: list[UsageRecord] = []
    for n, row in enumerate(rows, 1):
        values = dict(zip(COLUMNS, row, strict=True))
        values["user_id"] = values.pop("user")
        batch.append(UsageRecord(**values))
        if len(batch) == 5000:
            UsageRecord.objects.bulk_create(batch)
            batch = []
        if n % 200_000 == 0:
            print(f"  {n:,} / {total:,}", flush=True)
    UsageRecord.objects.bulk_create(batch)
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(UsageRecord._meta.db_table)
        with connection.cursor() as cursor:
            # What autovacuum does to a table that just took a million rows: the
            # statistics, and the visibility map that lets the (user, created)
            # index answer a month of spend without reading the table.
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def cleanup() -> None:
    started = time.perf_counter()
    deleted, _ = UsageRecord.objects.filter(user_email__endswith=DOMAIN).delete()
    User.objects.filter(email__endswith=DOMAIN).delete()
    if connection.vendor == "postgresql":
        # Dead rows would otherwise slow the next run's sequential scans.
        with connection.cursor() as cursor:
            cursor.execute(
                f"VACUUM ANALYZE {connection.ops.quote_name(UsageRecord._meta.db_table)}"
            )
    took = time.perf_counter() - started
    print(f"Deleted {deleted:,} generated rows and the bench users in {took:.1f} s.")


def time_report(group: str, repeat: int) -> tuple[list[float], int, int]:
    timings = []
    queries = 0
    rows = 0
    for _ in range(repeat):
        reset_queries()
        started = time.perf_counter()
        report = reports.usage_report(reports.ReportFilters(group=group))
        timings.append((time.perf_counter() - started) * 1000)
        queries = len(connection.queries)
        rows = len(report.rows)
    return timings, queries, rows


def explain(group: str) -> str:
    filters = reports.ReportFilters(group=group)
    start, end = filters.bounds()
    records = reports.filtered_records(filters, start, end)
    grouped: Any = reports._grouped(records, group)
    return str(grouped.explain(analyze=True) if connection.vendor == "postgresql" else "")


# Runs a command and prints its peak RSS in KB. A child's ru_maxrss counts the RSS
# of the process it was forked from (Linux keeps the high-water mark across exec),
# so the export is started from this small launcher, not from this big process.
PEAK_RSS_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def time_export(total: int) -> None:
    """export_usage of the whole ledger, in a child process: rows/s and its peak RSS."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "usage.csv"
        command = [sys.executable, str(ROOT / "manage.py"), "export_usage", "--output"]
        started = time.perf_counter()
        launched = subprocess.run(  # noqa: S603 - our own manage.py, fixed arguments
            [sys.executable, "-I", "-S", "-c", PEAK_RSS_LAUNCHER, *command, str(target)],
            check=True,
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - started
        peak_kb = int(launched.stdout.split()[-1])
        size = target.stat().st_size
    print(
        f"export_usage: {total:,} rows in {took:.1f} s = {total / took:,.0f} rows/s, "
        f"peak RSS {peak_kb / 1024:.0f} MB, {size / 1e6:.0f} MB of CSV"
    )


def month_start() -> datetime:
    return timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def time_pages(repeat: int) -> None:
    """The chat page of a 1,000-message conversation, and a heavy user's usage page."""
    from django.test import Client

    from conversations.models import Conversation, Message

    user = User.objects.filter(email__endswith=DOMAIN).order_by("pk").first()
    if user is None:
        print("pages: no bench user (run with --rows first)")
        return
    conversation = Conversation.objects.filter(user=user, title="bench: 1000 messages").first()
    if conversation is None:
        conversation = Conversation.objects.create(
            user=user, title="bench: 1000 messages", provider="openai", model="gpt-4o"
        )
        html = "<p>" + "A reply of a realistic length, with <strong>markup</strong>. " * 8 + "</p>"
        Message.objects.bulk_create(
            Message(
                conversation=conversation,
                role="user" if i % 2 == 0 else "assistant",
                content=f"message {i} " * 20,
                html="" if i % 2 == 0 else html,
                provider="openai",
                model="gpt-4o",
                input_tokens=1200,
                output_tokens=300,
                cost=Decimal("0.006000") if i % 2 else None,
            )
            for i in range(1000)
        )
    # As a server's worker has at its start (llmchat.asgi): the URLconf and the
    # templates loaded, so that the first timing is not this process's own start.
    from llmchat.warmup import warm_up

    warm_up()
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    pages = [
        ("chat page, 1,000 messages", f"/c/{conversation.pk}/"),
        ("usage page", "/usage/"),
    ]
    month = UsageRecord.objects.filter(user=user, created__gte=month_start()).count()
    print(f"(pages of the heaviest bench user: {month:,} calls this month)")
    for budget in (None, Decimal(1000)):
        # With a monthly budget the pages also sum the user's month of spend.
        User.objects.filter(pk=user.pk).update(monthly_budget=budget)
        suffix = "" if budget is None else " + budget"
        for label, url in pages:
            timings = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (url, response.status_code)
            label = f"{label}{suffix}"
            print(f"{label:<36} first {timings[0]:7.1f} ms   best {min(timings):7.1f} ms")
    User.objects.filter(pk=user.pk).update(monthly_budget=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=0, help="ledger rows to add (default 0)")
    parser.add_argument("--users", type=int, default=50, help="bench users (default 50)")
    parser.add_argument("--days", type=int, default=60, help="spread rows over N days")
    parser.add_argument("--repeat", type=int, default=3, help="runs per grouping")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE too")
    parser.add_argument("--cleanup", action="store_true", help="delete the generated data")
    parser.add_argument("--no-extras", action="store_true", help="skip the export and page timings")
    args = parser.parse_args()

    db = settings.DATABASES["default"]
    print(f"Database: {connection.vendor} {db.get('NAME')}")
    if not settings.DEBUG:
        print("(DEBUG is off: query counts are not recorded; run with DEBUG=true)")
    call_command("migrate", verbosity=0)

    if args.cleanup:
        cleanup()
        return

    if args.rows:
        users = bench_users(args.users)
        started = time.perf_counter()
        insert(generate(args.rows, users, args.days, args.seed), args.rows)
        took = time.perf_counter() - started
        print(f"Inserted {args.rows:,} rows in {took:.1f} s ({args.rows / took:,.0f} rows/s).")

    total = UsageRecord.objects.count()
    start, end = reports.ReportFilters().bounds()
    in_period = UsageRecord.objects.filter(created__gte=start, created__lt=end).count()
    print(f"Ledger: {total:,} rows; {in_period:,} in the default period ({start:%Y-%m-%d} on).")
    print()
    print(f"{'group by':<10} {'first ms':>9} {'best ms':>9} {'queries':>8} {'rows':>6}")
    for group, _label in reports.GROUPS:
        timings, queries, rows = time_report(group, args.repeat)
        print(f"{group:<10} {timings[0]:>9.1f} {min(timings):>9.1f} {queries:>8} {rows:>6}")
        if args.explain:
            print(explain(group))
            print()
    if not args.no_extras:
        print()
        time_pages(max(args.repeat, 10))  # pages are quick: best of ten
        time_export(total)


if __name__ == "__main__":
    main()
