"""Provider.timed: the time limits on a provider's stream (before the first token,
then between tokens), kept with one timer per limit, not one per event."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers import registry
from providers.base import Event, ProviderError, TextDelta

pytestmark = pytest.mark.anyio


async def tokens(
    count: int, every: float = 0.0, stall_after: int | None = None
) -> AsyncIterator[Event]:
    for i in range(count):
        if stall_after is not None and i == stall_after:
            await asyncio.sleep(3600)
        if every:
            await asyncio.sleep(every)
        yield TextDelta(f"t{i} ")


def timed(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    return registry.get("demo").timed(events)


@pytest.fixture
def limits(settings: Any) -> Any:
    settings.PROVIDER_FIRST_TOKEN_TIMEOUT = 0.3
    settings.PROVIDER_IDLE_TIMEOUT = 0.15
    return settings


async def test_a_stall_before_the_first_token_times_out(limits: Any) -> None:
    with pytest.raises(ProviderError) as exc:
        async for _ in timed(tokens(3, stall_after=0)):
            pass
    assert exc.value.code == "timeout"


async def test_a_stall_between_tokens_times_out_and_keeps_what_came(limits: Any) -> None:
    got: list[Event] = []

    async def drain() -> None:
        async for event in timed(tokens(5, stall_after=2)):
            got.append(event)

    with pytest.raises(ProviderError) as exc:
        await drain()
    assert exc.value.code == "timeout"
    assert len(got) == 2


async def test_the_shorter_limit_between_tokens_applies_from_the_first_token(
    limits: Any,
) -> None:
    limits.PROVIDER_FIRST_TOKEN_TIMEOUT = 60  # a reasoning model may think for long

    async def drain() -> None:
        async for _ in timed(tokens(5, stall_after=1)):
            pass

    with pytest.raises(ProviderError) as exc:
        async with asyncio.timeout(5):  # not the first token's 60 s
            await drain()
    assert exc.value.code == "timeout"


async def test_a_steady_stream_longer_than_the_limit_is_not_cut(limits: Any) -> None:
    # Ten tokens 0.05 s apart: 0.5 s in all, each gap well within 0.15 s.
    got = [event async for event in timed(tokens(10, every=0.05))]
    assert len(got) == 10


async def test_what_the_consumer_awaits_between_events_is_never_cut_short(limits: Any) -> None:
    got = []
    async for event in timed(tokens(3)):
        await asyncio.sleep(0.4)  # longer than both limits: not the stream's silence
        got.append(event)
    assert len(got) == 3


async def test_someone_elses_cancel_is_a_cancel_not_a_timeout(limits: Any) -> None:
    async def consume() -> None:
        async for _ in timed(tokens(3, stall_after=1)):
            pass

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_burst_of_events_sets_one_timer_not_one_each(limits: Any, monkeypatch: Any) -> None:
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal timers
        timers += 1
        return call_at(*args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    got = [event async for event in timed(tokens(200))]
    assert len(got) == 200
    assert timers <= 2
