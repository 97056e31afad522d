"""Serve the mock provider: `python -m devtools.mockprovider --port 9100`."""

from __future__ import annotations

import argparse
import sys

from devtools.mockprovider.server import FAULTS, MockConfig, MockProvider


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.mockprovider", description="Serve the mock LLM provider."
    )
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
    return parser


def fault_rates(items: list[str]) -> dict[str, float]:
    rates = {}
    for item in items:
        fault, _, rate = item.partition("=")
        if fault not in FAULTS:
            raise ValueError(f"Unknown fault {fault!r}; one of {', '.join(sorted(FAULTS))}")
        try:
            rates[fault] = float(rate)
        except ValueError:
            raise ValueError(f"Bad rate in {item!r}; use FAULT=0.05") from None
    return rates


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parser().parse_args(argv)
    try:
        rates = fault_rates(args.fault_rate)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    app = MockProvider(
        MockConfig(
            ttft=args.ttft,
            tokens_per_second=args.tokens_per_second,
            write_interval=args.write_interval,
            reply_tokens=args.reply_tokens,
            cached_tokens=args.cached_tokens,
            reasoning_tokens=args.reasoning_tokens,
            fault_rates=rates,
            seed=args.seed,
        )
    )
    url = f"http://{args.host}:{args.port}"
    print(
        f"Mock provider on {url}  (OPENAI_BASE_URL={url}/v1, "
        f"ANTHROPIC_BASE_URL / GEMINI_BASE_URL={url})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
