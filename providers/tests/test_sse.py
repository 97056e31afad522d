"""The Server-Sent Events reader the adapters use on the SDKs' raw responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.sse import ServerEvent, events

pytestmark = pytest.mark.anyio


class Body:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")

    async def iter_lines(self) -> AsyncIterator[str]:
        for line in self.lines:
            yield line


async def read(text: str) -> list[ServerEvent]:
    return [e async for e in events(Body(text))]


async def test_events_with_names_and_data() -> None:
    got = await read('event: a\ndata: {"x":1}\n\nevent: b\ndata: {"y":2}\n\n')
    assert got == [ServerEvent("a", '{"x":1}'), ServerEvent("b", '{"y":2}')]
    assert got[0].json() == {"x": 1}


async def test_unnamed_events_are_messages_and_data_lines_join() -> None:
    assert await read("data: one\ndata: two\n\n") == [ServerEvent("message", "one\ntwo")]


async def test_comments_and_empty_events_are_skipped() -> None:
    assert await read(": keep-alive\n\nevent: ping\n\ndata:x\n\n") == [ServerEvent("message", "x")]


async def test_a_body_cut_before_the_blank_line_still_gives_its_last_event() -> None:
    assert await read("data: [DONE]") == [ServerEvent("message", "[DONE]")]


def test_anthropic_errors_inside_a_stream_keep_their_meaning() -> None:
    from providers.adapters.anthropic import _stream_error

    def error(kind: str, message: str = "") -> str:
        return _stream_error({"type": "error", "error": {"type": kind, "message": message}}).code

    assert error("overloaded_error") == "overloaded"
    assert error("invalid_request_error", "prompt is too long: 210000 tokens") == "context_too_long"
    assert error("invalid_request_error", "Your credit balance is too low") == "insufficient_quota"
    assert error("invalid_request_error", "something else") == "bad_request"
    assert error("mystery_error") == "unavailable"
