"""Update model prices from LiteLLM's price file or our own CSV/JSON.

Prints what would change (added / changed / unchanged / missing from the source)
and what of the source was skipped and why, then applies it in one transaction: new
and changed models get new rows in effect from --effective-from (default now);
earlier rows, and so every cost already recorded, stay as they were. Running it
again with the same source changes nothing.
"""

from datetime import UTC, date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from pricing import sources


class Command(BaseCommand):
    help = "Update model prices from a LiteLLM, CSV or JSON price file or URL."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("source", metavar="FILE_OR_URL")
        parser.add_argument("--format", choices=["litellm", "csv", "json"], default=None)
        parser.add_argument("--provider", choices=sources.PROVIDERS, default=None)
        parser.add_argument("--dry-run", action="store_true", help="Show the diff only.")
        parser.add_argument(
            "--effective-from",
            metavar="DATE",
            default=None,
            help="When the new prices take effect (YYYY-MM-DD, UTC midnight). Default: now.",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        effective = self._effective_from(opts["effective_from"])
        try:
            text = sources.read_source(opts["source"])
            fmt = opts["format"] or sources.guess_format(opts["source"], text)
            parsed = sources.parse(text, fmt, source=opts["source"])
            result = sources.diff(parsed.rows, provider=opts["provider"])
        except sources.PriceSourceError as exc:
            raise CommandError(str(exc)) from None

        self._report(result)
        self._report_skipped(parsed, opts["verbosity"])
        if opts["dry_run"]:
            self.stdout.write("Dry run: nothing written.")
            return
        if not result.has_changes:
            self.stdout.write("Nothing to change.")
            return
        try:
            created = sources.apply(result, effective_from=effective)
        except sources.PriceSourceError as exc:
            raise CommandError(f"{exc} Nothing was written.") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {created} new price row(s), in effect from {effective:%Y-%m-%d %H:%M} UTC."
            )
        )

    def _effective_from(self, value: str | None) -> datetime:
        if value is None:
            return timezone.now()
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise CommandError(f"--effective-from: {value!r} is not a date (YYYY-MM-DD).") from None
        return datetime.combine(day, datetime.min.time(), UTC)

    def _report(self, result: sources.PriceDiff) -> None:
        for row in result.added:
            self.stdout.write(
                f"+ added     {row.provider}/{row.model}: "
                f"in {row.input_per_mtok} out {row.output_per_mtok} per 1M"
            )
        for old, row in result.changed:
            changes = ", ".join(
                f"{name} {getattr(old, name)} -> {getattr(row, name)}"
                for name in sources.ROW_FIELDS
                if name not in ("effective_from", "source", "provider", "model")
                and name not in row.unknown
                and getattr(old, name) != getattr(row, name)
            )
            self.stdout.write(f"~ changed   {row.provider}/{row.model}: {changes}")
        for price in result.missing:
            self.stdout.write(
                f"? missing   {price.provider}/{price.model} (not in the source; kept)"
            )
        self.stdout.write(
            f"{len(result.added)} added, {len(result.changed)} changed, "
            f"{len(result.unchanged)} unchanged, {len(result.missing)} missing from the source."
        )

    def _report_skipped(self, parsed: sources.ParsedSource, verbosity: int) -> None:
        if not parsed.skipped:
            return
        total = sum(len(names) for names in parsed.skipped.values())
        self.stdout.write(f"Skipped {total} of the source's {parsed.entries} entries:")
        for reason, names in parsed.skipped.items():
            self.stdout.write(f"  {len(names):>5} {sources.SKIP_REASONS[reason]}")
            # Conflicts need a decision, so they are always named; the rest are
            # named at --verbosity 2, except the thousands of other providers'.
            if reason == "conflict" or (verbosity >= 2 and reason != "provider"):
                for name in names:
                    self.stdout.write(f"        {name}")
