"""The Server-Sent Events reader the adapters use on the SDKs' raw responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from providers.base import Event, Finish, ProviderError, TextDelta
from providers.sse import ServerEvent, batches, events

pytestmark = pytest.mark.anyio


class Body:
    """A response body, as the reads of the connection bring it."""

    def __init__(self, *chunks: str | bytes) -> None:
        self.chunks = [c.encode() if isinstance(c, str) else c for c in chunks]

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def read(*chunks: str | bytes) -> list[ServerEvent]:
    return [e async for batch in batches(Body(*chunks)) for e in batch]


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
    assert await read("data: [DONE]\n") == [ServerEvent("message", "[DONE]")]


async def test_events_split_anywhere_across_reads() -> None:
    body = 'event: a\r\ndata: {"t":"caf\u00e9 \u2014 ok"}\r\n\r\ndata: two\r\n\r\n'.encode()
    whole = await read(body)
    assert whole == [ServerEvent("a", '{"t":"café — ok"}'), ServerEvent("message", "two")]
    for cut in range(1, len(body)):  # through a CRLF, a multi-byte character, a field name
        assert await read(body[:cut], body[cut:]) == whole, cut
    assert await read(*[body[i : i + 1] for i in range(len(body))]) == whole


async def test_lines_may_end_in_cr_alone() -> None:
    assert await read("data: one\r\rdata: two\r", "\r") == [
        ServerEvent("message", "one"),
        ServerEvent("message", "two"),
    ]


async def test_one_list_for_each_read_that_completes_events() -> None:
    got = [batch async for batch in batches(Body("data: a\n\ndata: b\n\ndata: c", "\n\n"))]
    assert got == [
        [ServerEvent("message", "a"), ServerEvent("message", "b")],
        [ServerEvent("message", "c")],
    ]


def as_text(sse: ServerEvent) -> Iterator[Event]:
    if sse.data == "stop":
        yield Finish("stop")
    elif sse.data == "fail":
        raise ProviderError("unavailable")
    else:
        yield TextDelta(sse.data)


async def mapped(*chunks: str) -> list[Event]:
    return [e async for e in events(Body(*chunks), as_text)]


async def test_the_text_of_one_read_goes_up_as_one_delta() -> None:
    got = await mapped("data: Hel\n\ndata: lo\n\ndata: , w\n\n", "data: orld\n\n")
    assert got == [TextDelta("Hello, w"), TextDelta("orld")]


async def test_text_is_not_held_back_past_another_event() -> None:
    got = await mapped("data: one\n\ndata: stop\n\ndata: two\n\n")
    assert got == [TextDelta("one"), Finish("stop"), TextDelta("two")]


async def test_text_before_an_error_goes_up_before_it() -> None:
    got: list[Event] = []

    async def drain() -> None:
        async for event in events(Body("data: so far\n\ndata: fail\n\n"), as_text):
            got.append(event)

    with pytest.raises(ProviderError):
        await drain()
    assert got == [TextDelta("so far")]


def test_anthropic_errors_inside_a_stream_keep_their_meaning() -> None:
    from providers.adapters.anthropic import _stream_error

    def error(kind: str, message: str = "") -> str:
        return _stream_error({"type": "error", "error": {"type": kind, "message": message}}).code

    assert error("overloaded_error") == "overloaded"
    assert error("invalid_request_error", "prompt is too long: 210000 tokens") == "context_too_long"
    assert error("invalid_request_error", "Your credit balance is too low") == "insufficient_quota"
    assert error("invalid_request_error", "something else") == "bad_request"
    assert error("mystery_error") == "unavailable"
