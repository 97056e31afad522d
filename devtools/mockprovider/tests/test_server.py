"""The mock provider's own pacing and writes (the wire protocols are the contract
tests' business: providers/tests/test_contract.py)."""

from typing import Any

import pytest

from devtools.mockprovider.server import MockProvider, _Exchange, token_due

pytestmark = pytest.mark.anyio


def test_tokens_are_due_one_step_apart_after_the_first() -> None:
    tps = 40.0
    instants = [token_due(100.0031, i, tps) for i in range(1, 6)]
    assert instants == pytest.approx([100.0031 + i / tps for i in range(1, 6)])


def test_the_schedule_does_not_drift_with_a_late_token() -> None:
    # Token 10 is due ten steps after the first, however late token 9 went.
    assert token_due(50.0, 10, 20.0) == pytest.approx(50.0 + 10 / 20)


def test_with_a_write_interval_the_tokens_due_within_it_go_together_never_early() -> None:
    tps, every = 40.0, 0.05  # a token every 25 ms, a write every 50 ms
    first = 7.0131
    instants = [token_due(first, i, tps, every) for i in range(1, 9)]
    for i, instant in enumerate(instants, start=1):
        assert instant >= token_due(first, i, tps) - 1e-9  # never before it is due
        assert instant - token_due(first, i, tps) < every  # nor a whole interval late
    assert instants[0] == instants[1] == pytest.approx(first + every)
    assert len(set(instants)) == 4  # two tokens a write
    # Each reply in its own phase: another's writes are not lined up with these.
    assert token_due(first + 0.01, 1, tps, every) == pytest.approx(first + 0.01 + every)
    # An interval shorter than a token's step changes nothing.
    assert token_due(first, 3, tps, 0.01) == token_due(first, 3, tps)


def exchange() -> tuple[_Exchange, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return _Exchange(MockProvider(), send, {}, {}, None), sent


async def test_events_held_go_out_in_one_write_when_flushed() -> None:
    ex, sent = exchange()
    await ex.sse({"n": 0})  # not holding: at once
    ex.hold()
    await ex.sse({"n": 1})
    await ex.sse({"n": 2}, event="delta")
    assert len(sent) == 1
    await ex.flush()
    assert len(sent) == 2
    assert sent[1]["body"] == b'data: {"n": 1}\n\nevent: delta\ndata: {"n": 2}\n\n'
    assert sent[1]["more_body"] is True
    await ex.flush()  # nothing held: nothing sent
    assert len(sent) == 2


async def test_the_end_sends_what_is_held_first() -> None:
    ex, sent = exchange()
    ex.hold()
    await ex.sse({"n": 1})
    await ex.end()
    assert [m["body"] for m in sent] == [b'data: {"n": 1}\n\n', b""]
    assert "more_body" not in sent[-1]
