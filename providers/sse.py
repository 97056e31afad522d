"""Server-Sent Events, read straight off an SDK's raw streaming response.

The OpenAI and Anthropic SDKs build the request, sign it, apply the timeouts and
raise their typed errors for a non-2xx answer; for the streamed body, though, they
validate every event into pydantic models — one per token, the largest part of a
turn's CPU (docs/performance.md). The adapters open the call with
`with_streaming_response` and read the events here as plain JSON instead.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


class _Lines(Protocol):
    def iter_lines(self) -> AsyncIterator[str]: ...


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: _Lines) -> AsyncIterator[ServerEvent]:
    """The events of a text/event-stream body (the WHATWG rules that matter here:
    `event` and `data` fields, multi-line data, comments, a blank line dispatches).
    An event with no data is skipped, as browsers do."""
    event = ""
    data: list[str] = []
    async for line in response.iter_lines():
        if not line:
            if data:
                yield ServerEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:  # a body that ended without the final blank line
        yield ServerEvent(event or "message", "\n".join(data))
