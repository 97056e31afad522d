"""Write the prices in effect now, in the CSV or JSON format update_prices reads."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from pricing import sources
from pricing.models import ModelPrice


class Command(BaseCommand):
    help = "Export the current price table as CSV or JSON."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--format", choices=["csv", "json"], default="json")
        parser.add_argument("--provider", choices=sources.PROVIDERS, default=None)
        parser.add_argument("--output", metavar="FILE", default=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        prices = ModelPrice.objects.in_effect().order_by("provider", "model")
        if opts["provider"]:
            prices = prices.filter(provider=opts["provider"])
        rows = [sources.row_from_model(p) for p in prices]
        text = sources.to_csv(rows) if opts["format"] == "csv" else sources.to_json(rows)
        if opts["output"]:
            Path(opts["output"]).write_text(text)
            self.stderr.write(f"Wrote {len(rows)} price(s) to {opts['output']}.")
        else:
            self.stdout.write(text, ending="")
