"""Replies' text mirrored to Redis Streams (with REDIS_URL), so that a follower
served by any worker process gets a reply that another one generates.

Each reply is a stream, `llmchat:reply:<id>:<created>` (its creation time tells
apart replies of the same id from other databases sharing the Redis, or from
before a restore): one entry per mirrored piece of
text (`o`: the reply's length after it, `t`: the text), then an `end` entry.
Streams are trimmed to about MAX_ENTRIES and expire KEEP_SECONDS after their
reply ends; a follower that comes later reads the database.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from conversations.models import Message

MAX_ENTRIES = 10_000
"""More than a reply of CHAT_STREAM_MAX_SECONDS makes, mirrored every 0.25 s."""
KEEP_SECONDS = 600

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _redis() -> aioredis.Redis:
    """This event loop's client (a client's connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = aioredis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
        )
    return client


def key(reply: Message) -> str:
    return f"llmchat:reply:{reply.pk}:{int(reply.created.timestamp() * 1_000_000)}"


async def publish(batch: list[tuple[str, int, str, bool]]) -> None:
    """Mirror (reply's key, length after, new text, ended) for each reply, in one round trip."""
    alive = settings.CHAT_STREAM_MAX_SECONDS + KEEP_SECONDS
    async with _redis().pipeline(transaction=False) as pipe:
        for name, offset, text, ended in batch:
            if text:
                pipe.xadd(name, {"o": offset, "t": text}, maxlen=MAX_ENTRIES, approximate=True)
            if ended:
                pipe.xadd(name, {"end": 1})
            pipe.expire(name, KEEP_SECONDS if ended else alive)
        await pipe.execute()


async def read(reply: Message, quiet_seconds: float) -> AsyncIterator[tuple[int, str] | None]:
    """The reply's mirrored pieces as (length after, text), from the first kept on;
    None after `quiet_seconds` without one; the end of the reply ends it."""
    name = key(reply)
    last = "0-0"
    while True:
        got: Any = await _redis().xread({name: last}, count=1000, block=int(quiet_seconds * 1000))
        if not got:
            yield None
            continue
        for entry_id, fields in got[0][1]:
            last = entry_id
            if b"end" in fields:
                return
            yield int(fields[b"o"]), fields[b"t"].decode()
