"""Server-Sent Events, read straight off an SDK's raw streaming response.

The OpenAI and Anthropic SDKs build the request, sign it, apply the timeouts and
raise their typed errors for a non-2xx answer; for the streamed body, though, they
validate every event into pydantic models — one per token, the largest part of a
turn's CPU (docs/performance.md). The adapters open the call with
`with_streaming_response` and read the events here as plain JSON instead.

What one read of the connection brings (several tokens, when they came
together) goes up the stack as one text delta, not one per token: each layer
above (time limits, retries, the relay to the client) then runs once per read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from providers.base import Event, TextDelta


class _Body(Protocol):
    def iter_bytes(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def batches(response: _Body) -> AsyncIterator[list[ServerEvent]]:
    """The events of a text/event-stream body, as a list for each read that
    completes any (the WHATWG rules that matter here: `event` and `data` fields,
    multi-line data, comments, a blank line dispatches; lines end in CRLF, LF or
    CR). An event with no data is skipped, as browsers do."""
    pending = b""
    event = ""
    data: list[str] = []
    async for chunk in response.iter_bytes():
        pending += chunk
        lines = pending.splitlines(keepends=True)
        # An unfinished last line waits for the next read; so does one ending in
        # a lone CR, which may be the first half of a CRLF.
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        batch = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode()
            if not line:
                if data:
                    batch.append(ServerEvent(event or "message", "\n".join(data)))
                event, data = "", []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
        if batch:
            yield batch
    # A body that ended without the final blank line.
    line = pending.rstrip(b"\r\n").decode()
    if line.startswith("data:"):
        data.append(line[5:].removeprefix(" "))
    if data:
        yield [ServerEvent(event or "message", "\n".join(data))]


async def events(
    response: _Body, handle: Callable[[ServerEvent], Iterator[Event]]
) -> AsyncIterator[Event]:
    """The provider's events: each server event mapped by the adapter's `handle`
    (a generator, which may raise a ProviderError after yielding what came
    before it), the text deltas of one read joined into one. Text is never held
    back past another kind of event, nor past an error."""
    async for batch in batches(response):
        text: list[str] = []
        try:
            for sse in batch:
                for event in handle(sse):
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        continue
                    if text:
                        yield TextDelta("".join(text))
                        text = []
                    yield event
        except Exception:
            if text:
                yield TextDelta("".join(text))
            raise
        if text:
            yield TextDelta("".join(text))
