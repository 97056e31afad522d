"""The contract every adapter keeps, run through the real SDKs over real HTTP
against the mock provider server (which speaks each vendor's wire protocol)."""

import logging
from typing import Any

import pytest

from providers import registry
from providers.base import (
    MAX_TOKENS,
    ChatMessage,
    ChatRequest,
    Credentials,
    Event,
    Failure,
    Finish,
    ProviderError,
    TextDelta,
    Usage,
    UsageReport,
)

pytestmark = pytest.mark.anyio

VENDORS = ["openai", "anthropic", "google", "compatible"]
KEY = "sk-test-contract-key-0123456789abcdef"
MODELS = {
    "openai": "gpt-mock",
    "anthropic": "claude-mock",
    "google": "gemini-mock",
    "compatible": "llama-mock",
}


def creds(vendor: str, mock: Any, key: str = KEY) -> Credentials:
    from django.conf import settings

    base = {
        "openai": settings.OPENAI_BASE_URL,
        "anthropic": settings.ANTHROPIC_BASE_URL,
        "google": settings.GEMINI_BASE_URL,
        "compatible": settings.OPENAI_BASE_URL,  # the mock's /v1
    }[vendor]
    return Credentials(key, base, "user")


def request(vendor: str, **kwargs: Any) -> ChatRequest:
    defaults: dict[str, Any] = {
        "model": MODELS[vendor],
        "messages": [
            ChatMessage("user", "Hello there"),
            ChatMessage("assistant", "Hi! How can I help?"),
            ChatMessage("user", "Tell me about tokens"),
        ],
        "system": "You are terse.",
    }
    return ChatRequest(**{**defaults, **kwargs})


async def collect(vendor: str, mock: Any, key: str = KEY, **kwargs: Any) -> list[Event]:
    provider = registry.get(vendor)
    return [e async for e in provider.stream(request(vendor, **kwargs), creds(vendor, mock, key))]


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def failure(events: list[Event]) -> ProviderError:
    assert isinstance(events[-1], Failure), events[-1]
    return events[-1].error


@pytest.mark.parametrize("write_interval", [0.0, 0.1])
@pytest.mark.parametrize("vendor", VENDORS)
async def test_it_streams_the_reply_then_usage_then_finish(
    vendor: str, write_interval: float, mock_provider: Any
) -> None:
    # Tokens 50 ms apart: each comes in a read of its own (what one read brings
    # goes up as one delta); with a write interval of 100 ms, two by two.
    mock_provider.configure(
        reply="Tokens are pieces of words.",
        input_tokens=40,
        tokens_per_second=20,
        write_interval=write_interval,
    )
    events = await collect(vendor, mock_provider)
    assert text_of(events) == "Tokens are pieces of words."
    deltas = sum(isinstance(e, TextDelta) for e in events)
    assert deltas >= (2 if write_interval else 3)  # streamed, not in one piece
    usage_event, finish = events[-2], events[-1]
    assert usage_event == UsageReport(Usage(input_tokens=40, output_tokens=5), final=True)
    assert isinstance(finish, Finish)
    assert finish.reason == "stop"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_usage_is_normalized_from_each_vendors_convention(
    vendor: str, mock_provider: Any
) -> None:
    # The mock reports these in each vendor's own shape: cached tokens inside or
    # outside the input, reasoning inside or outside the output.
    mock_provider.configure(
        input_tokens=1000,
        cached_tokens=600,
        cache_write_tokens=100 if vendor == "anthropic" else 0,
        reasoning_tokens=30,
        reply_tokens=20,
    )
    events = await collect(vendor, mock_provider)
    report = next(e for e in events if isinstance(e, UsageReport))
    expected = Usage(
        input_tokens=1000,
        cached_tokens=600,
        cache_write_tokens=100 if vendor == "anthropic" else 0,
        output_tokens=50,
        reasoning_tokens=30,
    )
    assert report.usage == expected


@pytest.mark.parametrize("vendor", VENDORS)
async def test_counts_no_database_can_hold_are_recorded_at_the_bound(
    vendor: str, mock_provider: Any
) -> None:
    mock_provider.configure(input_tokens=2**70, reasoning_tokens=2**64, reply_tokens=3)
    events = await collect(vendor, mock_provider)
    assert isinstance(events[-1], Finish)
    report = next(e for e in events if isinstance(e, UsageReport))
    assert report.usage.input_tokens == MAX_TOKENS
    assert report.usage.output_tokens == report.usage.reasoning_tokens == MAX_TOKENS


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_character_split_across_two_chunks_arrives_whole(
    vendor: str, mock_provider: Any
) -> None:
    # JSON carries the halves of a UTF-16 surrogate pair as escapes, one per chunk.
    mock_provider.configure(chunks=["Smile \ud83d", "\ude00 and \ud800 \x00", "\udbff"])
    events = await collect(vendor, mock_provider)
    text = text_of(events)
    assert text == "Smile \U0001f600 and \ufffd \ufffd\ufffd"
    text.encode("utf-8")  # every piece is valid text
    assert all(isinstance(e, TextDelta) for e in events[:-2])


@pytest.mark.parametrize("vendor", VENDORS)
async def test_it_sends_the_whole_history_and_the_system_prompt(
    vendor: str, mock_provider: Any
) -> None:
    await collect(vendor, mock_provider, max_output_tokens=321, temperature=0.25)
    (sent,) = mock_provider.requests
    body = sent.body
    if vendor == "openai":
        assert sent.path == "/v1/responses"
        assert body["store"] is False
        assert body["instructions"] == "You are terse."
        assert [m["role"] for m in body["input"]] == ["user", "assistant", "user"]
        assert body["max_output_tokens"] == 321
        assert body["temperature"] == 0.25
        assert sent.headers["authorization"] == f"Bearer {KEY}"
    elif vendor == "anthropic":
        assert sent.path == "/v1/messages"
        assert body["system"] == "You are terse."
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["max_tokens"] == 321
        assert body["temperature"] == 0.25
        # The SDK sends x-api-key or, in newer versions, a bearer token.
        assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    elif vendor == "google":
        assert sent.path == "/v1beta/models/gemini-mock:streamGenerateContent"
        assert sent.query["alt"] == ["sse"]
        assert body["systemInstruction"]["parts"][0]["text"] == "You are terse."
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["generationConfig"]["maxOutputTokens"] == 321
        assert body["generationConfig"]["temperature"] == 0.25
        assert sent.headers["x-goog-api-key"] == KEY
    else:
        assert sent.path == "/v1/chat/completions"
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
        assert [m["role"] for m in body["messages"][1:]] == ["user", "assistant", "user"]
        assert body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 321


ERRORS = [
    ("401", "invalid_key"),
    ("403", "permission_denied"),
    ("400", "bad_request"),
    ("429", "rate_limited"),
    ("quota", "insufficient_quota"),
    ("500", "unavailable"),
    ("503", "overloaded"),
    ("529", "overloaded"),
    ("context", "context_too_long"),
]


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(("fault", "code"), ERRORS)
async def test_each_error_maps_to_one_stable_code(
    vendor: str, fault: str, code: str, mock_provider: Any, settings: Any, caplog: Any
) -> None:
    settings.PROVIDER_MAX_RETRIES = 0
    mock_provider.configure(fault=fault, retry_after=7)
    with caplog.at_level(logging.DEBUG):
        events = await collect(vendor, mock_provider)
    error = failure(events)
    assert error.code == code
    assert error.message  # a sentence for the user
    if code == "rate_limited":
        assert error.retry_after == 7
    # The key never leaks: not in the error, not in any log line.
    for text in (error.message, str(error), repr(error), caplog.text):
        assert KEY not in text
        assert KEY[-8:] not in text


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_wrong_key_is_invalid_key(vendor: str, mock_provider: Any) -> None:
    # The mock answers a key containing "invalid" as the vendor would (Gemini: a
    # 400 API_KEY_INVALID, not a 401); OpenAI's body even echoes part of the key.
    bad = "sk-invalid-key-0123456789xyzw"
    error = failure(await collect(vendor, mock_provider, key=bad))
    assert error.code == "invalid_key"
    assert "xyzw" not in error.message
    assert len(mock_provider.requests) == 1  # never retried


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("fault", ["429", "500", "503", "529"])
async def test_transient_errors_are_retried_before_the_first_token(
    vendor: str, fault: str, mock_provider: Any
) -> None:
    mock_provider.configure(fault=fault, fault_times=1, retry_after=0, reply="Fine now.")
    events = await collect(vendor, mock_provider)
    assert text_of(events) == "Fine now."
    assert isinstance(events[-1], Finish)
    assert len(mock_provider.requests) == 2


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("fault", ["401", "403", "400", "quota", "context"])
async def test_client_errors_and_exhausted_quota_are_never_retried(
    vendor: str, fault: str, mock_provider: Any
) -> None:
    mock_provider.configure(fault=fault)
    failure(await collect(vendor, mock_provider))
    assert len(mock_provider.requests) == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_retries_stop_after_the_configured_number(
    vendor: str, mock_provider: Any, settings: Any
) -> None:
    settings.PROVIDER_MAX_RETRIES = 2
    mock_provider.configure(fault="500")
    assert failure(await collect(vendor, mock_provider)).code == "unavailable"
    assert len(mock_provider.requests) == 3


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_long_retry_after_is_left_to_the_user(vendor: str, mock_provider: Any) -> None:
    mock_provider.configure(fault="429", retry_after=60)
    error = failure(await collect(vendor, mock_provider))
    assert error.code == "rate_limited"
    assert error.retry_after == 60
    assert len(mock_provider.requests) == 1


# The mock as tests usually run it (a write per token, at once) and as the load
# harness does (tokens paced, those due within 50 ms written together).
WRITES = [{}, {"tokens_per_second": 100, "write_interval": 0.05}]


@pytest.mark.parametrize("writes", WRITES)
@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_cut_connection_keeps_the_partial_reply(
    vendor: str, writes: dict[str, float], mock_provider: Any
) -> None:
    mock_provider.configure(
        fault="cut", fault_after_tokens=3, reply="one two three four five", **writes
    )
    events = await collect(vendor, mock_provider)
    assert text_of(events) == "one two three"
    assert failure(events).code == "unavailable"
    assert len(mock_provider.requests) == 1  # text had arrived: no retry


@pytest.mark.parametrize("writes", WRITES)
@pytest.mark.parametrize("vendor", VENDORS)
async def test_an_error_inside_the_stream_keeps_the_partial_reply(
    vendor: str, writes: dict[str, float], mock_provider: Any
) -> None:
    mock_provider.configure(
        fault="midstream", fault_after_tokens=2, reply="one two three four", **writes
    )
    events = await collect(vendor, mock_provider)
    assert text_of(events) == "one two"
    # The mock sends what each vendor does: a server_error (OpenAI-style servers),
    # an overloaded_error (Anthropic), a 503 UNAVAILABLE status (Gemini).
    expected = "overloaded" if vendor in ("anthropic", "google") else "unavailable"
    assert failure(events).code == expected


async def test_anthropic_reports_the_input_it_counted_before_failing(mock_provider: Any) -> None:
    # message_start carried the input tokens; the stream then failed.
    mock_provider.configure(fault="midstream", fault_after_tokens=2, input_tokens=77)
    events = await collect("anthropic", mock_provider)
    partial = next(e for e in events if isinstance(e, UsageReport))
    assert partial.final is False
    assert partial.usage.input_tokens == 77


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_stall_before_the_first_token_times_out(
    vendor: str, mock_provider: Any, settings: Any
) -> None:
    settings.PROVIDER_FIRST_TOKEN_TIMEOUT = 0.3
    settings.PROVIDER_MAX_RETRIES = 0
    mock_provider.configure(fault="stall", stall_seconds=30)
    assert failure(await collect(vendor, mock_provider)).code == "timeout"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_silent_stream_times_out(vendor: str, mock_provider: Any, settings: Any) -> None:
    settings.PROVIDER_IDLE_TIMEOUT = 0.2
    mock_provider.configure(tokens_per_second=2, reply="slow reply comes")
    events = await collect(vendor, mock_provider)
    assert text_of(events) == "slow"
    assert failure(events).code == "timeout"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_content_filter_stop_is_reported(vendor: str, mock_provider: Any) -> None:
    mock_provider.configure(fault="filter")
    events = await collect(vendor, mock_provider)
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == "content_filter"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_stopping_early_closes_the_upstream_call(vendor: str, mock_provider: Any) -> None:
    import anyio

    mock_provider.configure(reply_tokens=200, tokens_per_second=50)
    stream = registry.get(vendor).stream(request(vendor), creds(vendor, mock_provider))
    seen = 0
    async for event in stream:
        if isinstance(event, TextDelta):
            seen += 1
            if seen == 3:
                break
    await stream.aclose()
    with anyio.fail_after(5):
        # The server notices in its own thread; poll for it.
        while mock_provider.disconnects < 1:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    assert mock_provider.disconnects == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_check_key(vendor: str, mock_provider: Any) -> None:
    provider = registry.get(vendor)
    await provider.check_key(creds(vendor, mock_provider))
    with pytest.raises(ProviderError) as exc:
        await provider.check_key(creds(vendor, mock_provider, key="sk-invalid-0123456789"))
    assert exc.value.code == "invalid_key"


async def test_the_demo_provider_answers_without_a_key(mock_provider: Any) -> None:
    provider = registry.get("demo")
    req = request("openai", model="demo-echo", messages=[ChatMessage("user", "What is 2+2?")])
    events = [e async for e in provider.stream(req, Credentials("", "", "none"))]
    assert "What is 2+2?" in text_of(events)
    assert "offline demo" in text_of(events)
    report = next(e for e in events if isinstance(e, UsageReport))
    assert report.usage.input_tokens > 0
    assert report.usage.output_tokens > 0
    assert events[-1] == Finish("stop")
    assert mock_provider.requests == []  # no network at all


@pytest.mark.parametrize("vendor", VENDORS)
async def test_the_mock_records_a_marked_turn_s_own_time_to_first_token(
    vendor: str, mock_provider: Any
) -> None:
    # bench/chat_load.py subtracts the provider's own time to first token, per turn.
    import httpx2
    from django.conf import settings

    mock_provider.configure(ttft=0.15, reply="one two")
    marked = [
        ChatMessage("user", "Hello there"),
        ChatMessage("assistant", "Hi!"),
        ChatMessage("user", "Go on [turn 0123abcd0123abcd]"),
    ]
    await collect(vendor, mock_provider, messages=marked)
    await collect(vendor, mock_provider)  # unmarked: not recorded
    base = settings.ANTHROPIC_BASE_URL  # the mock's root
    async with httpx2.AsyncClient() as client:
        recorded = (await client.get(f"{base}/_mock/first-tokens")).json()
    assert list(recorded) == ["0123abcd0123abcd"]
    assert 0.14 <= recorded["0123abcd0123abcd"] < 1.0  # the 0.15 s sleep, to the clock's grain


@pytest.mark.parametrize(
    ("vendor", "listed"),
    [
        ("openai", ["gpt-mock", "gpt-mock-mini"]),  # not its embedding or audio models
        ("anthropic", ["claude-mock", "claude-mock-haiku"]),
        ("google", ["gemini-mock", "gemini-mock-flash"]),
        ("compatible", ["gpt-mock", "gpt-mock-mini", "text-embedding-mock", "whisper-mock"]),
    ],
)
async def test_it_lists_the_chat_models_the_key_may_use(
    vendor: str, listed: list[str], mock_provider: Any
) -> None:
    assert await registry.get(vendor).list_models(creds(vendor, mock_provider)) == listed


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_listing_with_a_bad_key_is_a_provider_error(
    vendor: str, mock_provider: Any
) -> None:
    with pytest.raises(ProviderError) as exc:
        await registry.get(vendor).list_models(
            creds(vendor, mock_provider, key="sk-invalid-0123456789")
        )
    assert exc.value.code == "invalid_key"
