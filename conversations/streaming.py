"""A reply's generation, owned by the server rather than by an HTTP request, and
the ways to follow it.

`start(turn)` runs the generation in a task of the worker's event loop: it reads
the provider's events, keeps the reply's text, saves it at checkpoints, ends it
at Stop or at the deadline, and saves it with its usage (turns.chat_finish). A
client that leaves changes nothing.

`follow(reply_id, after=offset)` yields the reply from a character offset on,
then how it ended, from whichever source has it: the generation itself when it
runs on this event loop; else, with REDIS_URL, the Redis stream that every
generation mirrors its text to; else the checkpoints in the database. Each
piece of text carries the reply's length after it, the cursor a client gives
back to pick up where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.utils import timezone

from conversations import mirror, turns
from conversations.markdown import render_markdown
from conversations.models import Message, Status
from llmchat import metrics
from providers.base import ChatStream, Failure, Finish, ProviderError, TextDelta, UsageReport

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
MIRROR_SECONDS = 0.25
"""How often a generation's new text goes to Redis, for followers in other processes."""
MAX_FLUSH_SECONDS = 1.0
"""However busy the process, a follower gets the reply's text at least this often."""
RENDER_SECONDS = 1.0
"""How often, at most, a follower that asked for it gets the reply so far as HTML."""


# --- What a follower gets -----------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """More of the reply; `offset` is its length after this text."""

    text: str
    offset: int


@dataclass(frozen=True)
class Ended:
    """The reply as saved: how it ended. None: its save failed (the sweeper closes it)."""

    message: Message | None


@dataclass(frozen=True)
class Rendered:
    """The reply's first `offset` characters as sanitized HTML (render_markdown),
    for a page that shows the reply formatted while it is written."""

    html: str
    offset: int


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new for a while: a comment keeps proxies from closing the stream."""


Event = Text | Rendered | Ended | KeepAlive


# --- The generation -------------------------------------------------------------------


class Generation:
    """One reply being generated, on the event loop that started it."""

    def __init__(self, turn: turns.Turn) -> None:
        self.turn = turn
        self.reply_id: int = turn.assistant_message.pk
        self.parts: list[str] = []
        self.length = 0
        self.ended = False
        self.message: Message | None = None  # as saved, once ended
        self.task: asyncio.Task[None] | None = None
        self._joined = ""
        self._status: str = Status.COMPLETE
        self._error: ProviderError | None = None
        self._usage_final = False
        self._ttft_ms: int | None = None
        self._started = time.monotonic()
        self._stream: ChatStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stop_asked = False
        self._changed: asyncio.Future[None] | None = None
        self._rendered: Rendered | None = None
        self._rendered_at = 0.0
        self._rendering: asyncio.Future[Rendered] | None = None

    def text(self) -> str:
        if len(self._joined) != self.length:
            self._joined = "".join(self.parts)
        return self._joined

    async def rendered(self) -> Rendered:
        """The reply so far as HTML, rendered at most every render_interval()
        however many follow it (rendering is the costly part), in a thread."""
        loop = asyncio.get_running_loop()
        if self._rendering is not None:
            return await asyncio.shield(self._rendering)
        latest = self._rendered
        if latest is not None and (
            latest.offset == self.length or loop.time() - self._rendered_at < render_interval()
        ):
            return latest
        text = self.text()
        self._rendering = loop.create_future()
        try:
            html = await loop.run_in_executor(None, render_markdown, text)
            self._rendered, self._rendered_at = Rendered(html, len(text)), loop.time()
            self._rendering.set_result(self._rendered)
        except BaseException as exc:
            self._rendering.set_exception(exc)
            raise
        finally:
            self._rendering = None
        return self._rendered

    def usage_so_far(self) -> Any:
        return self._stream.usage if self._stream is not None else None

    def stop(self) -> None:
        """Stop reading the provider: the reply so far is saved as stopped."""
        self._stop_asked = True
        if self._reader is not None:
            self._reader.cancel()

    async def changed(self, within: float) -> bool:
        """Wait for more text or the end, up to `within` seconds: whether it came."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait({self._changed}, timeout=within)
        return bool(done)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def run(self) -> None:
        adapter = self.turn.adapter
        assert adapter is not None
        self._stream = adapter.stream(self.turn.request, self.turn.creds)
        metrics.stream_started()
        loop = asyncio.get_running_loop()
        # Ends the reply before the sweeper could take it for dead (turns.stale_after).
        limit = max(settings.CHAT_STREAM_MAX_SECONDS - 30, 1)
        self._reader = loop.create_task(self._read(self._stream))
        try:
            done, _ = await asyncio.wait({self._reader}, timeout=limit)
            if not done:
                self._reader.cancel()
                self._error = ProviderError("timeout", "The reply ran past the time limit.")
                self._status = Status.PARTIAL if self.parts else Status.ERROR
        finally:
            # Shielded: a loop shutting down must not cut the save short.
            await asyncio.shield(loop.create_task(self._finish()))

    async def _read(self, stream: ChatStream) -> None:
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    if self._ttft_ms is None:
                        self._ttft_ms = int((time.monotonic() - self._started) * 1000)
                    self.parts.append(event.text)
                    self.length += len(event.text)
                    self._notify()
                elif isinstance(event, Finish) and event.reason == "content_filter":
                    self._error = ProviderError("content_filtered")
                    self._status = Status.PARTIAL if self.parts else Status.ERROR
                elif isinstance(event, Failure):
                    self._error = event.error
                    self._status = Status.PARTIAL if self.parts else Status.ERROR
                elif isinstance(event, UsageReport):
                    # Final: the provider's own count, even when the reply was
                    # filtered; otherwise it is completed with an estimate.
                    self._usage_final = event.final
        except asyncio.CancelledError:
            if self._stop_asked:
                self._status, self._error = Status.STOPPED, None
            raise
        except Exception:  # ChatStream turns failures into events; this is a bug
            logger.exception("reading the provider stream failed")
            self._error = ProviderError("unavailable")
            self._status = Status.PARTIAL if self.parts else Status.ERROR

    async def _finish(self) -> None:
        _generations().remove(self)
        try:
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._stream is not None:
                try:
                    await self._stream.aclose()  # ends the upstream call if it is still open
                except Exception:
                    logger.exception("closing the provider stream failed")
            self.message = await in_thread(
                _finish_turn,
                turn=self.turn,
                text=self.text(),
                status=self._status,
                usage=self._stream.usage if self._stream is not None else None,
                usage_final=self._usage_final and self._status != Status.STOPPED,
                error=self._error,
                ttft_ms=self._ttft_ms,
                latency_ms=int((time.monotonic() - self._started) * 1000),
            )
        except Exception:
            # Even the save of the reply as failed did not go through (the database
            # is down): followers hear so; the sweeper closes the reply.
            logger.exception("saving a reply failed")
        finally:
            metrics.stream_finished()
            self.ended = True
            self._notify()
            _generations().ended(self)


def start(turn: turns.Turn) -> Generation:
    """Run the turn's generation on this event loop, whatever becomes of the request."""
    generation = Generation(turn)
    _generations().add(generation)
    generation.task = asyncio.get_running_loop().create_task(generation.run())
    return generation


def running(reply_id: int) -> Generation | None:
    """The reply's generation, if it runs on this event loop."""
    return _generations().running.get(reply_id)


def stop_here(reply_id: int) -> bool:
    """Stop the reply at once if its generation runs on this event loop."""
    generation = running(reply_id)
    if generation is None:
        return False
    generation.stop()
    return True


class _Generations:
    """The generations of one event loop (one per worker process), and the work
    done for all of them at once: one UPDATE every CHECKPOINT_SECONDS saves their
    text so far and reads whether any was asked to stop from another process;
    with Redis, one pipeline every MIRROR_SECONDS mirrors their new text."""

    def __init__(self) -> None:
        self.running: dict[int, Generation] = {}
        self._saved: dict[int, int] = {}  # the length of the text last checkpointed
        self._mirrored: dict[int, int] = {}  # the length of the text last mirrored
        self._unmirrored_ends: list[Generation] = []
        self._housekeeping: asyncio.Task[None] | None = None
        self._mirroring: asyncio.Task[None] | None = None

    def add(self, generation: Generation) -> None:
        self.running[generation.reply_id] = generation
        loop = asyncio.get_running_loop()
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = loop.create_task(self._checkpoints())
        if settings.REDIS_URL:
            self._mirrored[generation.reply_id] = 0
            if self._mirroring is None or self._mirroring.done():
                self._mirroring = loop.create_task(self._mirror())

    def remove(self, generation: Generation) -> None:
        """The reply's final save follows: nothing more to checkpoint for it."""
        self.running.pop(generation.reply_id, None)
        self._saved.pop(generation.reply_id, None)

    def ended(self, generation: Generation) -> None:
        if settings.REDIS_URL:
            self._unmirrored_ends.append(generation)

    async def _checkpoints(self) -> None:
        while self.running:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            progress = {}
            for reply_id, generation in self.running.items():
                if generation.length != self._saved.get(reply_id, 0):
                    progress[reply_id] = turns.Progress(
                        generation.text(), generation.usage_so_far()
                    )
            try:
                stops = await in_thread(_checkpoint, progress, list(self.running))
            except Exception:  # the next round tries again; the final save is separate
                logger.exception("saving the replies so far failed")
                continue
            for reply_id, saved in progress.items():
                if reply_id in self.running:
                    self._saved[reply_id] = len(saved.text)
            for reply_id in stops:
                stop_here(reply_id)

    async def _mirror(self) -> None:
        while self._mirrored:  # until every reply's end is mirrored too
            await asyncio.sleep(MIRROR_SECONDS)
            batch: list[tuple[str, int, str, bool]] = []
            ends, self._unmirrored_ends = self._unmirrored_ends, []
            for generation in [*self.running.values(), *ends]:
                done = generation in ends
                sent = self._mirrored.get(generation.reply_id, 0)
                if generation.length > sent or done:
                    text = generation.text()
                    reply = generation.turn.assistant_message
                    batch.append((mirror.key(reply), len(text), text[sent:], done))
                    self._mirrored[generation.reply_id] = len(text)
                if done:
                    self._mirrored.pop(generation.reply_id, None)
            if batch:
                try:
                    await mirror.publish(batch)
                except Exception:  # followers elsewhere fall back to the checkpoints
                    logger.exception("mirroring replies to Redis failed")


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Generations] = (
    weakref.WeakKeyDictionary()
)


def _generations() -> _Generations:
    loop = asyncio.get_running_loop()
    generations = _by_loop.get(loop)
    if generations is None:
        generations = _by_loop[loop] = _Generations()
    return generations


# --- Following a reply ----------------------------------------------------------------


class _Followers:
    """How many followers this process is relaying to now (changed on the event loop)."""

    count = 0


def flush_interval() -> float:
    """The shortest time between two pieces of text sent to one follower, now.

    CHAT_STREAM_FLUSH_SECONDS while the process is lightly loaded. When it relays
    to more followers than CHAT_STREAM_EVENTS_PER_SECOND allows at that pace, each
    gets its share instead (200 at 1000 events/s: one every 0.2 s), up to
    MAX_FLUSH_SECONDS: the same text in fewer, larger events, so that a busy
    process spends less of its CPU on relaying and answers new requests sooner."""
    interval = settings.CHAT_STREAM_FLUSH_SECONDS
    if interval <= 0:
        return 0.0
    budget = settings.CHAT_STREAM_EVENTS_PER_SECOND
    if budget > 0:
        interval = max(interval, min(_Followers.count / budget, MAX_FLUSH_SECONDS))
    return float(interval)


def render_interval() -> float:
    """The shortest time between two renderings of a reply: RENDER_SECONDS, or
    longer when the process is busy (ten flush intervals)."""
    return max(RENDER_SECONDS, 10 * flush_interval())


def follow(reply: Message, *, after: int = 0, render: bool = False) -> AsyncIterator[Event]:
    """The reply from character `after` on, then Ended; KeepAlive when quiet.
    With `render`, Rendered events too, from a generation on this event loop
    (elsewhere the text alone: the page formats the reply when it ends).

    The source is chosen now, not when iteration starts: a reply this worker
    generates is followed from its generation even if it ends before the
    response's body is first read."""
    generation = running(reply.pk)
    if generation is not None:
        return _counted(_follow_here(generation, after, render=render))
    if settings.REDIS_URL:
        return _counted(_follow_mirror(reply, after))
    return _counted(_follow_checkpoints(reply.pk, after))


async def _counted(source: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """A follower takes its share of the events (flush_interval) once text flows."""
    counted = False
    try:
        async for event in source:
            if not counted and isinstance(event, Text):
                _Followers.count += 1
                counted = True
            yield event
    finally:
        if counted:
            _Followers.count -= 1


async def _follow_here(
    generation: Generation, cursor: int, *, render: bool = False
) -> AsyncIterator[Event]:
    loop = asyncio.get_running_loop()
    heartbeat = settings.CHAT_HEARTBEAT_SECONDS
    flush_at = 0.0
    rendered_up_to = cursor
    # Without coalescing, each part is sent as it came, from this index on (a
    # follower that joins mid-reply first gets what it missed in one piece).
    sent_parts = 0 if cursor == 0 else -1
    while True:
        if generation.length > cursor:
            interval = flush_interval()
            if interval <= 0 and sent_parts >= 0:
                for part in generation.parts[sent_parts:]:
                    cursor += len(part)
                    yield Text(part, cursor)
                sent_parts = len(generation.parts)
                if render and not generation.ended:
                    for event in await _rendering(generation, cursor, rendered_up_to):
                        if isinstance(event, Text):
                            sent_parts = -1  # what came since went out in one piece
                        cursor = rendered_up_to = event.offset
                        yield event
                continue
            wait = flush_at - loop.time()
            if wait > 0 and not generation.ended:
                # Text that comes within the flush interval goes out together:
                # one event (one encoding, one write) instead of one per token.
                await asyncio.sleep(wait)
                continue
            text = generation.text()
            sent_parts = len(generation.parts)
            yield Text(text[cursor:], len(text))
            cursor = len(text)
            flush_at = loop.time() + interval
            if render and not generation.ended:
                for event in await _rendering(generation, cursor, rendered_up_to):
                    cursor = rendered_up_to = event.offset
                    yield event
        elif generation.ended:
            yield Ended(generation.message)
            return
        elif not await generation.changed(heartbeat):
            yield KeepAlive()


async def _rendering(
    generation: Generation, cursor: int, rendered_up_to: int
) -> list[Text | Rendered]:
    """A newer rendering of the reply, if there is one, preceded by the text it
    covers that the follower has not had yet (a page needs the text up to the
    rendered part to carry on after it)."""
    shown = await generation.rendered()
    if shown.offset <= rendered_up_to:
        return []
    if shown.offset > cursor:
        return [Text(generation.text()[cursor : shown.offset], shown.offset), shown]
    return [shown]


async def _follow_mirror(reply: Message, cursor: int) -> AsyncIterator[Event]:
    """The reply as its generation mirrors it to Redis, from another process."""
    reply_id = reply.pk
    async for piece in mirror.read(reply, settings.CHAT_HEARTBEAT_SECONDS):
        if piece is None:
            # Quiet for a heartbeat: the reply may have been closed without its
            # generation (its process died, and it was swept).
            message = await in_thread(saved_reply, reply_id)
            if message is None or message.status != Status.GENERATING or is_stale(message):
                async for event in ended(message, cursor):
                    yield event
                return
            yield KeepAlive()
            continue
        offset, text = piece
        begins = offset - len(text)
        if offset <= cursor:
            continue
        if begins > cursor:  # trimmed away: the checkpoint has the gap, if anything
            message = await in_thread(saved_reply, reply_id)
            gap = message.content[cursor:begins] if message is not None else ""
            text = gap + text
        else:
            text = text[cursor - begins :]
        yield Text(text, offset)
        cursor = offset
    async for event in ended(await in_thread(saved_reply, reply_id), cursor):
        yield event


async def ended(message: Message | None, cursor: int) -> AsyncIterator[Event]:
    """A reply's end as saved: its text past the cursor, if any, then Ended."""
    if message is not None and len(message.content) > cursor:
        yield Text(message.content[cursor:], len(message.content))
    yield Ended(message)


async def _follow_checkpoints(reply_id: int, cursor: int) -> AsyncIterator[Event]:
    """The reply as its checkpoints saved it, read every CHECKPOINT_SECONDS: for a
    follower in another process than the generation's, without Redis."""
    quiet_since = time.monotonic()
    while True:
        message = await in_thread(saved_reply, reply_id)
        if message is None or message.status != Status.GENERATING or is_stale(message):
            async for event in ended(message, cursor):
                yield event
            return
        if len(message.content) > cursor:
            yield Text(message.content[cursor:], len(message.content))
            cursor = len(message.content)
            quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= settings.CHAT_HEARTBEAT_SECONDS:
            yield KeepAlive()
            quiet_since = time.monotonic()
        await asyncio.sleep(CHECKPOINT_SECONDS)


def is_stale(message: Message) -> bool:
    """Generating for longer than any generation lasts: its process died, and the
    sweeper will close it; a follower stops waiting."""
    return message.created < timezone.now() - turns.stale_after()


def saved_reply(reply_id: int) -> Message | None:
    try:
        return Message.objects.filter(pk=reply_id).first()
    finally:
        release_connections()


# --- Database work from the event loop ------------------------------------------------


async def in_thread[R](work: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run database work in one of the process's threads for it, whether or not a
    request is still being handled: a generation outlives its request."""
    run = sync_to_async(work, thread_sensitive=False, executor=_db_threads())
    return await run(*args, **kwargs)


@functools.cache
def _db_threads() -> ThreadPoolExecutor:
    """As many threads as the database pool has connections (more would only wait
    for one), apart from the event loop's default threads, which also resolve the
    providers' host names."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    size = pool.get("max_size", 20) if isinstance(pool, dict) else 20
    return ThreadPoolExecutor(max(int(size), 1), "chat-db")


def release_connections() -> None:
    """Give this thread's database connections back (to the pool). A generation
    or a follower lasts seconds to minutes: holding a connection for all of it
    would cap open replies at the pool's size and starve other requests."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def _checkpoint(progress: dict[int, turns.Progress], replies: list[int]) -> set[int]:
    try:
        if progress:
            turns.chat_checkpoint(progress)
        return turns.stops_requested(replies)
    finally:
        release_connections()


def _finish_turn(*, turn: turns.Turn, **reply: Any) -> Message:
    """chat_finish, then the stream slot and the connection go back: one trip to a
    thread for all three."""
    try:
        return turns.chat_finish(turn=turn, **reply)
    finally:
        try:
            turns.release_turn(turn)
        finally:
            release_connections()
