"""Serve the mock provider (OpenAI, Anthropic and Gemini wire protocols) for tests,
benchmarks and trying the app without real keys."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from providers.mockserver import FAULTS, MockConfig, MockProvider


class Command(BaseCommand):
    help = "Serve the mock LLM provider server."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100)
        parser.add_argument("--ttft", type=float, default=0.0, help="Seconds to first token.")
        parser.add_argument("--tokens-per-second", type=float, default=0.0)
        parser.add_argument(
            "--write-interval",
            type=float,
            default=0.0,
            help="Send the tokens due within this many seconds in one write "
            "(0: a write per token, unless late; only with --tokens-per-second).",
        )
        parser.add_argument("--reply-tokens", type=int, default=12)
        parser.add_argument("--cached-tokens", type=int, default=0)
        parser.add_argument("--reasoning-tokens", type=int, default=0)
        parser.add_argument(
            "--fault-rate",
            action="append",
            default=[],
            metavar="FAULT=RATE",
            help="Random fault injection, e.g. 429=0.05 cut=0.01 (repeatable).",
        )
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        import uvicorn

        rates = {}
        for item in opts["fault_rate"]:
            fault, _, rate = item.partition("=")
            if fault not in FAULTS:
                raise CommandError(f"Unknown fault {fault!r}; one of {', '.join(sorted(FAULTS))}")
            try:
                rates[fault] = float(rate)
            except ValueError:
                raise CommandError(f"Bad rate in {item!r}; use FAULT=0.05") from None
        app = MockProvider(
            MockConfig(
                ttft=opts["ttft"],
                tokens_per_second=opts["tokens_per_second"],
                write_interval=opts["write_interval"],
                reply_tokens=opts["reply_tokens"],
                cached_tokens=opts["cached_tokens"],
                reasoning_tokens=opts["reasoning_tokens"],
                fault_rates=rates,
                seed=opts["seed"],
            )
        )
        self.stdout.write(
            f"Mock provider on http://{opts['host']}:{opts['port']}  "
            f"(OPENAI_BASE_URL=http://{opts['host']}:{opts['port']}/v1, "
            f"ANTHROPIC_BASE_URL / GEMINI_BASE_URL=http://{opts['host']}:{opts['port']})"
        )
        uvicorn.run(app, host=opts["host"], port=opts["port"], log_level="warning", lifespan="off")
