"""Test helpers for the chat API: post to /api/chat and read the event stream;
start a turn through the service."""

import json
from typing import Any

from conversations import turns


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def chat(client: Any, **body: Any) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """POST /api/chat; return the response and its events (empty for a 4xx)."""
    payload = {"conversation": None, "provider": "demo", "model": "demo-echo", "message": "Hello"}
    payload.update(body)
    response = await client.post("/api/chat", json.dumps(payload), content_type="application/json")
    if not getattr(response, "streaming", False):
        return response, []
    chunks = [c.decode() if isinstance(c, bytes) else c async for c in response.streaming_content]
    return response, parse_sse("".join(chunks))


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def start(user: Any, **kwargs: Any) -> Any:
    """chat_start for `user`: a new conversation with OpenAI's gpt-4o, "Hi", unless told."""
    params: dict[str, Any] = {
        "user": user,
        "conversation_id": None,
        "provider": "openai",
        "model": "gpt-4o",
        "message": "Hi",
    }
    params.update(kwargs)
    return turns.chat_start(**params)
