"""calculate_cost: exact Decimal arithmetic for every vendor's usage convention."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.calculator import Price, Rates, calculate_cost
from providers.adapters.anthropic import usage_from_anthropic
from providers.adapters.compatible import usage_from_chat
from providers.adapters.google import usage_from_gemini
from providers.adapters.openai import usage_from_responses
from providers.base import Usage

D = Decimal

SONNET = Price(Rates(input=D("3"), output=D("15"), cached_input=D("0.30"), cache_write=D("3.75")))
GPT = Price(Rates(input=D("1.25"), output=D("10"), cached_input=D("0.125")))
GEMINI_PRO = Price(
    Rates(input=D("1.25"), output=D("10"), cached_input=D("0.31")),
    tier_threshold=200_000,
    tier=Rates(input=D("2.50"), output=D("15"), cached_input=D("0.625")),
)


def test_openai_cached_tokens_are_inside_input_and_billed_at_the_cached_price() -> None:
    usage = usage_from_responses(
        {
            "input_tokens": 10_000,
            "input_tokens_details": {"cached_tokens": 8_000},
            "output_tokens": 2_000,
            "output_tokens_details": {"reasoning_tokens": 1_500},
        }
    )
    # 2000 uncached * 1.25 + 8000 cached * 0.125 + 2000 output (reasoning included) * 10
    assert calculate_cost(usage, GPT) == D("0.0235")


def test_chat_completions_convention() -> None:
    usage = usage_from_chat(
        {
            "prompt_tokens": 1_000_000,
            "completion_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    )
    assert calculate_cost(usage, GPT) == D("1.25")


def test_anthropic_cache_reads_and_writes_sit_outside_its_input_count() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 10_000,
            "cache_creation_input_tokens": 248,
            "output_tokens": 503,
        }
    )
    # 50*3 + 10000*0.30 + 248*3.75 + 503*15 = 150 + 3000 + 930 + 7545 = 11625 / 1M
    assert calculate_cost(usage, SONNET) == D("0.011625")


def test_gemini_thoughts_are_billed_as_output() -> None:
    usage = usage_from_gemini(
        {
            "promptTokenCount": 4_000,
            "cachedContentTokenCount": 3_000,
            "candidatesTokenCount": 120,
            "thoughtsTokenCount": 880,
        }
    )
    # 1000*1.25 + 3000*0.31 + 1000*10 = 1250 + 930 + 10000 = 12180 / 1M
    assert calculate_cost(usage, GEMINI_PRO) == D("0.01218")


def test_tier_cost_exactly() -> None:
    over = Usage(input_tokens=200_001, output_tokens=1_000)
    # 200001 * 2.50 + 1000 * 15 = 500002.5 + 15000 = 515002.5 / 1M = 0.5150025 -> 0.515003
    assert calculate_cost(over, GEMINI_PRO) == D("0.515003")


def test_missing_cached_and_write_prices_fall_back_to_input() -> None:
    price = Price(Rates(input=D("2"), output=D("8")))
    usage = Usage(input_tokens=1_000, cached_tokens=400, cache_write_tokens=100, output_tokens=10)
    assert calculate_cost(usage, price) == D("0.00208")


def test_a_separate_reasoning_price_applies_to_reasoning_tokens_only() -> None:
    price = Price(Rates(input=D("1"), output=D("4"), reasoning=D("3.5")))
    usage = Usage(input_tokens=0, output_tokens=1_000, reasoning_tokens=600)
    assert calculate_cost(usage, price) == D("0.0037")  # 400*4 + 600*3.5


def test_rounding_is_half_up_to_the_micro_dollar() -> None:
    price = Price(Rates(input=D("0.5"), output=D("0")))
    assert calculate_cost(Usage(input_tokens=1), price) == D("0.000001")  # 0.0000005
    assert calculate_cost(Usage(input_tokens=0), price) == D("0")


def test_the_demo_is_free() -> None:
    free = Price(Rates(input=D("0"), output=D("0")))
    assert calculate_cost(Usage(input_tokens=10**9, output_tokens=10**9), free) == 0


# --- Properties -----------------------------------------------------------------

prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cached = draw(st.integers(0, 10**7))
    write = draw(st.integers(0, 10**6))
    plain = draw(st.integers(0, 10**7))
    reasoning = draw(st.integers(0, 10**6))
    visible = draw(st.integers(0, 10**6))
    return Usage(
        input_tokens=plain + cached + write,
        cached_tokens=cached,
        cache_write_tokens=write,
        output_tokens=visible + reasoning,
        reasoning_tokens=reasoning,
    )


@st.composite
def price_tables(draw: st.DrawFn) -> Price:
    base = Rates(
        input=draw(prices),
        output=draw(prices),
        cached_input=draw(st.none() | prices),
        cache_write=draw(st.none() | prices),
    )
    return Price(base)


@given(usages(), price_tables())
def test_cost_is_an_exact_non_negative_decimal(usage: Usage, price: Price) -> None:
    cost = calculate_cost(usage, price)
    assert type(cost) is Decimal
    assert cost >= 0
    assert cost == cost.quantize(D("0.000001"))
    r = price.base
    exact = (
        (usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens) * r.input
        + usage.cached_tokens * (r.input if r.cached_input is None else r.cached_input)
        + usage.cache_write_tokens * (r.input if r.cache_write is None else r.cache_write)
        + usage.output_tokens * r.output
    ) / 1_000_000
    assert abs(cost - exact) <= D("0.0000005")


@given(usages(), price_tables(), st.integers(1, 10**6))
def test_more_output_never_costs_less(usage: Usage, price: Price, extra: int) -> None:
    more = Usage(
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens + extra,
        reasoning_tokens=usage.reasoning_tokens,
    )
    assert calculate_cost(more, price) >= calculate_cost(usage, price)


@given(usages(), prices, prices)
def test_reading_from_a_cheaper_cache_never_costs_more(
    usage: Usage, input_price: Decimal, output_price: Decimal
) -> None:
    cheaper = Price(Rates(input=input_price, output=output_price, cached_input=input_price / 10))
    uncached = Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
    assert calculate_cost(usage, cheaper) <= calculate_cost(uncached, cheaper) + D("0.000001")


@given(usages(), usages(), price_tables())
def test_cost_is_additive_within_rounding(a: Usage, b: Usage, price: Price) -> None:
    both = Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )
    total = calculate_cost(a, price) + calculate_cost(b, price)
    assert abs(calculate_cost(both, price) - total) <= D("0.000001")


@pytest.mark.parametrize("threshold_offset", [-1, 0, 1])
def test_the_tier_switches_exactly_above_the_threshold(threshold_offset: int) -> None:
    usage = Usage(input_tokens=200_000 + threshold_offset)
    rates = GEMINI_PRO.rates_for(usage)
    assert rates is (GEMINI_PRO.tier if threshold_offset > 0 else GEMINI_PRO.base)
