"""Each vendor's usage convention, normalized: input includes cached, output
includes reasoning. Pure functions over the vendors' own field names."""

from typing import Any

import pytest

from providers.adapters.anthropic import usage_from_anthropic
from providers.adapters.compatible import usage_from_chat
from providers.adapters.google import usage_from_gemini
from providers.adapters.openai import usage_from_responses
from providers.base import MAX_TOKENS, Usage


def test_openai_responses_input_already_includes_cached_and_output_reasoning() -> None:
    raw = {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 256},
        "total_tokens": 1500,
    }
    assert usage_from_responses(raw) == Usage(
        input_tokens=1200, cached_tokens=1024, output_tokens=300, reasoning_tokens=256
    )


def test_openai_chat_completions_prompt_includes_cached() -> None:
    raw = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage_from_chat(raw) == Usage(input_tokens=2006, cached_tokens=1920, output_tokens=300)


def test_a_compatible_server_without_details_still_counts() -> None:
    # Ollama, vLLM and friends often send only the three totals.
    raw = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert usage_from_chat(raw) == Usage(input_tokens=12, output_tokens=5)


def test_anthropic_input_excludes_cache_reads_and_writes() -> None:
    raw = {
        "input_tokens": 50,
        "cache_read_input_tokens": 10000,
        "cache_creation_input_tokens": 248,
        "output_tokens": 503,
    }
    assert usage_from_anthropic(raw) == Usage(
        input_tokens=10298, cached_tokens=10000, cache_write_tokens=248, output_tokens=503
    )


def test_anthropic_without_caching_fields() -> None:
    assert usage_from_anthropic({"input_tokens": 25, "output_tokens": 10}) == Usage(
        input_tokens=25, output_tokens=10
    )


def test_gemini_thoughts_are_output_but_not_inside_candidates() -> None:
    raw = {
        "promptTokenCount": 4000,
        "cachedContentTokenCount": 3000,
        "candidatesTokenCount": 120,
        "thoughtsTokenCount": 880,
        "totalTokenCount": 5000,
    }
    assert usage_from_gemini(raw) == Usage(
        input_tokens=4000, cached_tokens=3000, output_tokens=1000, reasoning_tokens=880
    )


def test_gemini_sdk_objects_use_snake_case() -> None:
    from google.genai import types

    raw = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=10, candidates_token_count=4, thoughts_token_count=6
    )
    assert usage_from_gemini(raw) == Usage(input_tokens=10, output_tokens=10, reasoning_tokens=6)


def test_vendor_anomalies_never_break_a_reply() -> None:
    # Parts larger than their whole (a vendor bug) stretch the whole; junk is 0.
    assert usage_from_chat(
        {
            "prompt_tokens": 5,
            "completion_tokens": None,
            "prompt_tokens_details": {"cached_tokens": 9},
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
    ) == Usage(input_tokens=9, cached_tokens=9, output_tokens=3, reasoning_tokens=3)


def test_usage_keeps_its_invariants() -> None:
    with pytest.raises(ValueError, match="part of the input"):
        Usage(input_tokens=1, cached_tokens=2)
    with pytest.raises(ValueError, match="part of the output"):
        Usage(output_tokens=1, reasoning_tokens=2)


def test_anthropic_thinking_is_reported_as_reasoning_inside_the_output() -> None:
    raw = {
        "input_tokens": 25,
        "output_tokens": 900,
        "output_tokens_details": {"thinking_tokens": 640},
    }
    assert usage_from_anthropic(raw) == Usage(
        input_tokens=25, output_tokens=900, reasoning_tokens=640
    )


@pytest.mark.parametrize(
    "junk", ["12", "twelve", float("nan"), float("inf"), -5, True, [3], {"n": 1}, 2**70, 1e300]
)
def test_no_number_a_vendor_sends_breaks_the_usage(junk: Any) -> None:
    for convert, raw in (
        (usage_from_chat, {"prompt_tokens": junk, "completion_tokens": junk}),
        (
            usage_from_anthropic,
            {"input_tokens": junk, "cache_read_input_tokens": junk, "output_tokens": junk},
        ),
        (
            usage_from_gemini,
            {"promptTokenCount": junk, "candidatesTokenCount": junk, "thoughtsTokenCount": junk},
        ),
        (
            usage_from_responses,
            {
                "input_tokens": junk,
                "output_tokens": junk,
                "output_tokens_details": {"reasoning_tokens": junk},
            },
        ),
    ):
        usage = convert(raw)
        for count in (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens):
            assert 0 <= count <= MAX_TOKENS


def test_counts_are_bounded_by_what_the_ledger_stores() -> None:
    with pytest.raises(ValueError, match="at most"):
        Usage(input_tokens=MAX_TOKENS + 1)
    huge = usage_from_anthropic(
        {"input_tokens": MAX_TOKENS, "cache_read_input_tokens": MAX_TOKENS, "output_tokens": 2**64}
    )
    assert huge == Usage(
        input_tokens=MAX_TOKENS, cached_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS
    )
