"""What a call cost: a pure function of its usage and the price in effect.

The seed's `calculate_cost`, exact: Decimal throughout, prices per million tokens,
rounded once, half up, to the micro-dollar. The usage is the providers' normalized
form (providers.base.Usage): input includes cached and cache-write tokens, output
includes reasoning tokens — so each vendor's convention was already dealt with.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from providers.base import Usage

MICRO_DOLLAR = Decimal("0.000001")
PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Rates:
    """Prices per million tokens. A None cached or cache-write price means those
    tokens are billed as ordinary input; a None reasoning price, as output."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True)
class Price:
    base: Rates
    # Long-context tier: a prompt of more than `tier_threshold` input tokens is
    # billed entirely at `tier` rates (Gemini Pro above 200k and the like).
    tier_threshold: int | None = None
    tier: Rates | None = None

    def rates_for(self, usage: Usage) -> Rates:
        if (
            self.tier is not None
            and self.tier_threshold is not None
            and usage.input_tokens > self.tier_threshold
        ):
            return self.tier
        return self.base


def calculate_cost(usage: Usage, price: Price) -> Decimal:
    """The cost in USD, exact to the micro-dollar."""
    rates = price.rates_for(usage)
    plain_input = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    plain_output = usage.output_tokens - usage.reasoning_tokens
    total = (
        plain_input * rates.input
        + usage.cached_tokens * _or(rates.cached_input, rates.input)
        + usage.cache_write_tokens * _or(rates.cache_write, rates.input)
        + plain_output * rates.output
        + usage.reasoning_tokens * _or(rates.reasoning, rates.output)
    )
    return (total / PER_MILLION).quantize(MICRO_DOLLAR, rounding=ROUND_HALF_UP)


def _or(value: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if value is None else value
