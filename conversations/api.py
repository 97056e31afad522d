"""The chat JSON API (session auth + CSRF). The chat pages use it; the contract is
documented in docs/api.md and kept stable.

POST /api/chat streams the reply as Server-Sent Events from an async view:
`start`, `delta`..., then `done` or `error`. Everything that can be refused is
refused before the stream starts, as a JSON 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from conversations import budgets, selectors, services
from conversations.models import Conversation, Message, Status
from llmchat import metrics
from llmchat.api import ApiError, api_view, error_response, id_field, read_json, string_field
from llmchat.handlers import close_connections
from llmchat.logging import request_id_var
from pricing.calculator import MICRO_DOLLAR
from providers import keys, registry
from providers.base import Failure, Finish, ProviderError, TextDelta, UsageReport

logger = logging.getLogger(__name__)

MAX_CHAT_BODY = 1024 * 1024
CHECKPOINT_SECONDS = 2.0


def money(value: Decimal | None) -> str | None:
    """Money in JSON: a decimal string with six places (micro-dollars), never a float."""
    return None if value is None else format(Decimal(value).quantize(MICRO_DOLLAR), "f")


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.pk,
        "role": m.role,
        "content": m.content,
        "html": m.html,
        "status": m.status,
        "provider": m.provider,
        "model": m.model,
        "key_source": m.key_source,
        "input_tokens": m.input_tokens,
        "cached_tokens": m.cached_tokens,
        "output_tokens": m.output_tokens,
        "reasoning_tokens": m.reasoning_tokens,
        "usage_estimated": m.usage_estimated,
        "cost": money(m.cost),
        "unpriced": m.unpriced,
        "fallback_price": m.fallback_price,
        "error_code": m.error_code,
        "error_message": m.error_message,
        "created_at": m.created.isoformat(),
    }


def conversation_json(c: Conversation, total: Decimal, unpriced: int) -> dict[str, Any]:
    return {
        "id": c.pk,
        "title": c.title,
        "provider": c.provider,
        "model": c.model,
        "updated_at": c.updated.isoformat(),
        "total_cost": money(total),
        "unpriced_calls": unpriced,
    }


# --- POST /api/chat ---------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _chat_fields(data: dict[str, Any]) -> dict[str, Any]:
    conversation = id_field(data, "conversation")
    regenerate = data.get("regenerate", False)
    if not isinstance(regenerate, bool):
        raise ApiError(400, "invalid", "'regenerate' must be true or false.", field="regenerate")
    system_prompt = data.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ApiError(400, "invalid", "'system_prompt' must be a string.", field="system_prompt")
    return {
        "conversation_id": conversation,
        "provider": string_field(data, "provider"),
        "model": string_field(data, "model"),
        "message": string_field(data, "message", required=not regenerate),
        "system_prompt": system_prompt,
        "client_message_id": string_field(data, "client_message_id", required=False),
        "regenerate": regenerate,
    }


@api_view(["POST"])
def chat(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """A sync view on purpose: the middleware, the session and user, reading the
    body and chat_start all run in the one trip to a worker thread the request
    makes anyway. Only the reply's stream (an async generator) runs on the event
    loop, where Django's ASGI handler iterates it."""
    try:
        fields = _chat_fields(read_json(request, max_bytes=MAX_CHAT_BODY))
        turn = services.chat_start(user=request.user, **fields)  # type: ignore[arg-type]
    except services.ChatRefused as exc:
        refused = error_response(exc.status, exc.code, exc.message, **exc.extra)
        if "retry_after" in exc.extra:
            refused["Retry-After"] = str(exc.extra["retry_after"])
        return refused
    return EventStreamResponse(
        _stream(turn, request_id=getattr(request, "id", "")),
        on_unsent=functools.partial(_abandon_turn, turn),
    )


def _abandon_turn(turn: services.Turn) -> None:
    """The client left before the reply's stream began: the provider was never
    called. The reply is closed as stopped (nothing billed) and the conversation
    and the stream slot are freed, instead of waiting for the sweeper."""
    if not turn.replay:  # a replayed reply is final already and took no slot
        _finish_turn(
            turn=turn,
            text="",
            status=Status.STOPPED,
            usage=None,
            usage_final=False,
            provider_called=False,
        )


class EventStreamResponse(StreamingHttpResponse):
    """Server-Sent Events from an async generator that is always closed.

    Django closes the iterator it reads (`aclosing(aiter(response))`), but its
    wrapper does not close the generator inside. A client that leaves while the
    body is being written (between two events) would leave the reply's generator
    suspended until garbage collection, its reply "generating". Closing it here
    saves the reply as stopped at once.

    A response closed without its body ever being read (the client left while
    the request was handled, or before the headers went out) calls `on_unsent`
    instead: the generator never ran, so its own clean-up never will.
    """

    def __init__(
        self, events: AsyncGenerator[str], *, on_unsent: Callable[[], object] | None = None
    ) -> None:
        self._events = events
        self._on_unsent = on_unsent
        self._started = False
        super().__init__(self._marked(), content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"

    async def _marked(self) -> AsyncIterator[str]:
        # Started once anyone reads the body, through __aiter__ or streaming_content.
        self._started = True
        async for part in self._events:
            yield part

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._started = True
        try:
            async for part in self._events:
                yield self.make_bytes(part)
        finally:
            await self._events.aclose()

    def close(self) -> None:
        try:
            super().close()
        finally:
            on_unsent, self._on_unsent = self._on_unsent, None
            if on_unsent is not None and not self._started:
                on_unsent()


_END = object()


MAX_FLUSH_SECONDS = 1.0
"""However busy the process, a reply's text goes out at least this often."""


class _Relaying:
    """How many replies this process is relaying right now: from their first
    token to the end of their stream (one waiting for its first token sends
    nothing). Changed and read on the event loop only (one per worker process),
    so a plain count will do."""

    streams = 0


def flush_interval() -> float:
    """The shortest time between two `delta` events of one reply, now.

    CHAT_STREAM_FLUSH_SECONDS while the process is lightly loaded. When it relays
    more replies than CHAT_STREAM_EVENTS_PER_SECOND allows at that pace, each
    reply gets its share instead (200 replies at 1000 events/s: one event every
    0.2 s), up to MAX_FLUSH_SECONDS: the same text in fewer, larger events (fewer
    encodings and writes), so that a busy
    process spends less of its CPU on relaying and answers new requests sooner
    (docs/performance.md)."""
    interval = settings.CHAT_STREAM_FLUSH_SECONDS
    if interval <= 0:
        return 0.0
    budget = settings.CHAT_STREAM_EVENTS_PER_SECOND
    if budget > 0:
        interval = max(interval, min(_Relaying.streams / budget, MAX_FLUSH_SECONDS))
    return float(interval)


class _Checkpoints:
    """The text of the replies this process is streaming, saved every
    CHECKPOINT_SECONDS so that a process that dies mid-reply loses little of it
    (the sweeper keeps what was saved). All of them in one UPDATE from one task,
    not one UPDATE (and one trip to a thread, one connection from the pool) per
    reply: at 200 replies streaming that was a hundred a second.

    Lives on the event loop (one per worker process); a reply's text is its
    stream's list of parts, joined when saved."""

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}
        self._saved: dict[int, int] = {}  # length of the text last saved
        self._task: asyncio.Task[None] | None = None

    def track(self, message_id: int, parts: list[str]) -> None:
        self._parts[message_id] = parts
        loop = asyncio.get_running_loop()
        # (A task of another loop, ended or not, does not count: tests run many.)
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    def untrack(self, message_id: int) -> None:
        """The reply's final save follows: nothing more to save for it here."""
        self._parts.pop(message_id, None)
        self._saved.pop(message_id, None)

    async def _run(self) -> None:
        while self._parts:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            await self.save()

    async def save(self) -> None:
        texts = {}
        for message_id, parts in self._parts.items():
            text = "".join(parts)
            if len(text) != self._saved.get(message_id, 0):
                texts[message_id] = text
        if not texts:
            return
        try:
            await _saved(_checkpoint, texts)
        except Exception:  # the next round tries again; the final save is separate
            logger.exception("saving the replies so far failed")
            return
        for message_id, text in texts.items():
            if message_id in self._parts:
                self._saved[message_id] = len(text)


_checkpoints = _Checkpoints()


class _Inbox:
    """What the provider sent, waiting for the relay: events in order, and a wake-up
    for the relay. More text does not wake it while it holds text for its next
    delta (`coalescing`): it takes everything at that instant instead, one
    wake-up for several tokens rather than one each."""

    def __init__(self) -> None:
        self.events: deque[Any] = deque()
        self.coalescing = False
        self._ready = asyncio.Event()

    def put(self, event: Any) -> None:
        self.events.append(event)
        if not (self.coalescing and isinstance(event, TextDelta)):
            self._ready.set()

    async def wait(self, until: float) -> None:
        """Until something is put that wakes the relay, or `until` (loop time)."""
        if self.events and not self.coalescing:
            return
        self._ready.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(until):
                await self._ready.wait()


async def _pump(stream: AsyncIterable[Any], inbox: _Inbox) -> None:
    """Read the provider's events into the inbox, in a task of their own: the
    relay can then wait with a timeout (to flush or send a keep-alive) without
    ever cancelling a read from the provider."""
    try:
        async for event in stream:
            inbox.put(event)
    except Exception:  # ChatStream turns failures into events; this is a bug
        logger.exception("reading the provider stream failed")
        inbox.put(Failure(ProviderError("unavailable")))
    finally:
        inbox.put(_END)


async def _stream(turn: services.Turn, *, request_id: str = "") -> AsyncGenerator[str]:
    # The body is produced after the middleware returned: its log lines (the chat
    # turn) carry the request's id all the same.
    if request_id:
        request_id_var.set(request_id)
    assistant = turn.assistant_message
    try:
        yield _sse(
            "start",
            {
                "conversation": turn.conversation.pk,
                "user_message": turn.user_message.pk if turn.user_message else None,
                "message": assistant.pk,
                "title": turn.conversation.title,
            },
        )
    except BaseException:
        # Gone while the first event was being written: the provider was not
        # called yet. Close the turn as never sent (shielded: this task is ending).
        await asyncio.shield(asyncio.ensure_future(_saved(_abandon_turn, turn)))
        raise
    # The request's database connection went back to the pool when the view
    # returned (llmchat.handlers); each later step takes one for its own queries.
    if turn.replay:
        if assistant.content:
            yield _sse("delta", {"text": assistant.content})
        yield _final_event(assistant)
        return

    provider = registry.get(turn.provider)
    stream = provider.stream(turn.request, turn.creds)
    metrics.stream_started()
    relaying = False  # counted in _Relaying.streams
    loop = asyncio.get_running_loop()
    inbox = _Inbox()
    pump = loop.create_task(_pump(stream, inbox))
    parts: list[str] = []
    unsent: list[str] = []  # text received but not yet sent
    status = Status.COMPLETE
    error: ProviderError | None = None
    started = time.monotonic()
    ttft_ms: int | None = None
    usage_final = False
    # Text that arrives within flush_interval() of the last delta sent goes out
    # with the next: one event (one JSON encoding, one write) per interval instead
    # of one per token. The first goes at once.
    flush_every = flush_interval()
    heartbeat = settings.CHAT_HEARTBEAT_SECONDS
    flush_at = 0.0
    quiet_until = loop.time() + heartbeat
    # Ends the stream before the sweeper could take it for dead.
    deadline = loop.time() + max(settings.CHAT_STREAM_MAX_SECONDS - 30, 1)

    async def finish() -> Message:
        if relaying:  # nothing more to relay: its share goes to the others now
            _Relaying.streams -= 1
        _checkpoints.untrack(assistant.pk)
        try:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            try:
                await stream.aclose()  # ends the upstream call if it is still open
            except Exception:
                logger.exception("closing the provider stream failed")
            return await _saved(
                _finish_turn,
                turn=turn,
                text="".join(parts),
                status=status,
                usage=stream.usage,
                usage_final=usage_final and status != Status.STOPPED,
                error=error,
                ttft_ms=ttft_ms,
                latency_ms=int((time.monotonic() - started) * 1000),
            )
        finally:
            metrics.stream_finished()

    try:
        ended = False
        while not ended:
            # Each chunk its own delta when coalescing is off (flush interval 0).
            while inbox.events and not ended and not (unsent and flush_every <= 0):
                event = inbox.events.popleft()
                if event is _END:
                    ended = True
                elif isinstance(event, TextDelta):
                    if ttft_ms is None:
                        ttft_ms = int((time.monotonic() - started) * 1000)
                        relaying = True
                        _Relaying.streams += 1
                        _checkpoints.track(assistant.pk, parts)
                    parts.append(event.text)
                    unsent.append(event.text)
                elif isinstance(event, Finish) and event.reason == "content_filter":
                    error = ProviderError("content_filtered")
                    status = Status.PARTIAL if parts else Status.ERROR
                elif isinstance(event, Failure):
                    error = event.error
                    status = Status.PARTIAL if parts else Status.ERROR
                elif isinstance(event, UsageReport):
                    # Final: the provider's own count, even when the reply was
                    # filtered; otherwise it is completed with an estimate.
                    usage_final = event.final
            now = loop.time()
            if ended or now > deadline or (unsent and now >= flush_at):
                if unsent:
                    yield _sse("delta", {"text": "".join(unsent)})
                    unsent.clear()
                    flush_every = flush_interval()
                    flush_at = now + flush_every
                    quiet_until = now + heartbeat
                if not ended and now > deadline:
                    error = ProviderError("timeout", "The reply ran past the time limit.")
                    status = Status.PARTIAL if parts else Status.ERROR
                    ended = True
                continue
            if not unsent and now >= quiet_until:
                yield ": keep-alive\n\n"
                quiet_until = now + heartbeat
            # Holding text for the next delta, more text needn't wake the relay.
            inbox.coalescing = bool(unsent) and flush_every > 0
            await inbox.wait(min(flush_at if unsent else quiet_until, deadline))
    except BaseException:
        # The client went away (Stop, a closed tab): keep what arrived, marked.
        status = Status.STOPPED
        error = None
        # Shielded: the save must finish even though this task is being cancelled.
        await asyncio.shield(asyncio.ensure_future(finish()))
        raise
    try:
        # Shielded too: a client leaving just now must not cancel the save.
        message = await asyncio.shield(asyncio.ensure_future(finish()))
    except Exception:
        # Even the save of the reply as failed did not go through (the database is
        # down): the client still hears how the turn ended; the sweeper closes it.
        logger.exception("saving a reply failed")
        yield _sse(
            "error",
            {
                "code": services.SAVE_FAILED,
                "message": "The reply could not be saved. Reload the page in a while.",
                "message_id": assistant.pk,
            },
        )
        return
    yield _final_event(message)


async def _saved[R](save: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a reply's save in a thread of `_save_threads()`, whether or not the
    request is still being handled: it may run after the client has gone and the
    request's own thread was given back (llmchat.handlers). The save gives its
    database connection back itself."""
    run = sync_to_async(save, thread_sensitive=False, executor=_save_threads())
    return await run(*args, **kwargs)


@functools.cache
def _save_threads() -> ThreadPoolExecutor:
    """The process's threads for replies' final saves: as many as the database
    pool has connections (more would only wait for one), and not the event
    loop's default threads, which also resolve the providers' host names."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    size = pool.get("max_size", 20) if isinstance(pool, dict) else 20
    return ThreadPoolExecutor(max(int(size), 1), "chat-save")


def _checkpoint(texts: dict[int, str]) -> None:
    try:
        services.chat_checkpoint(texts)
    finally:
        close_connections()


def _finish_turn(*, turn: services.Turn, **reply: Any) -> Message:
    """chat_finish, then the stream slot and the connection go back: one trip to
    a worker thread for all three."""
    try:
        return services.chat_finish(turn=turn, **reply)
    finally:
        try:
            services.release_turn(turn)
        finally:
            close_connections()


def _final_event(message: Message) -> str:
    body = message_json(message)
    if message.status in (Status.ERROR, Status.PARTIAL):
        return _sse(
            "error",
            {
                "code": message.error_code or "unavailable",
                "message": message.error_message or "The reply failed.",
                "message_id": message.pk,
                **body,
            },
        )
    return _sse("done", {"message": message.pk, **body})


# --- Conversations ------------------------------------------------------------------


@api_view(["GET"])
def conversation_list(request: HttpRequest) -> JsonResponse:
    q = request.GET.get("q", "")[:200].replace("\x00", "")
    conversations = selectors.conversation_list(request.user, q=q)  # type: ignore[arg-type]
    return JsonResponse(
        [conversation_json(c, c.total_cost, c.unpriced_calls) for c in conversations],  # type: ignore[attr-defined]
        safe=False,
    )


@api_view(["GET", "PATCH", "DELETE"])
def conversation_detail(request: HttpRequest, pk: int) -> JsonResponse:
    user = request.user
    try:
        if request.method == "DELETE":
            services.conversation_delete(user=user, pk=pk)  # type: ignore[arg-type]
            return JsonResponse({"deleted": True})
        if request.method == "PATCH":
            data = read_json(request, max_bytes=16 * 1024)
            services.conversation_rename(user=user, pk=pk, title=string_field(data, "title"))  # type: ignore[arg-type]
        services.conversation_for_user(user, pk)  # type: ignore[arg-type]  # 404 first
        services.sweep_stale_streams(conversation_id=pk)
        detail = selectors.conversation_detail(user, pk)  # type: ignore[arg-type]
    except services.ChatRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from None
    body = conversation_json(detail.conversation, detail.total_cost, detail.unpriced_calls)
    body["system_prompt"] = detail.conversation.system_prompt
    body["messages"] = [message_json(m) for m in detail.messages]
    return JsonResponse(body)


@api_view(["GET"])
def conversation_export(request: HttpRequest, pk: int) -> HttpResponse:
    fmt = request.GET.get("format", "md")
    if fmt not in ("md", "json"):
        raise ApiError(400, "invalid", "format is md or json.", field="format")
    detail = selectors.conversation_detail(request.user, pk)  # type: ignore[arg-type]
    c = detail.conversation
    slug = f"conversation-{c.pk}"
    if fmt == "json":
        body = conversation_json(c, detail.total_cost, detail.unpriced_calls)
        body["system_prompt"] = c.system_prompt
        body["messages"] = [message_json(m) for m in detail.messages]
        response: HttpResponse = JsonResponse(body, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{slug}.json"'
        return response
    lines = [f"# {c.title or 'Conversation'}", ""]
    if c.system_prompt:
        lines += ["> System prompt:", *[f"> {line}" for line in c.system_prompt.splitlines()], ""]
    for m in detail.messages:
        if m.role == "user":
            lines += ["## You", "", m.content, ""]
        else:
            cost = f"${m.cost}" if m.cost is not None else "unpriced"
            meta = (
                f"{m.provider}/{m.model} · {m.input_tokens} in ({m.cached_tokens} cached) · "
                f"{m.output_tokens} out ({m.reasoning_tokens} reasoning) · {cost}"
            )
            if m.status != Status.COMPLETE:
                meta += f" · {m.status}"
            lines += [f"## Assistant ({meta})", "", m.content, ""]
    lines += [f"Total: ${detail.total_cost}", ""]
    response = HttpResponse("\n".join(lines), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slug}.md"'
    return response


# --- Models and usage -----------------------------------------------------------------


@api_view(["GET"])
def model_list(request: HttpRequest) -> JsonResponse:
    choices = selectors.models_for_user(request.user)  # type: ignore[arg-type]
    return JsonResponse(
        [
            {
                "provider": c.provider,
                "provider_label": c.provider_label,
                "model": c.model,
                "name": c.name,
                "input_per_mtok": money(c.input_per_mtok),
                "cached_input_per_mtok": money(c.cached_input_per_mtok),
                "output_per_mtok": money(c.output_per_mtok),
                "context_window": c.context_window,
                "available": c.available,
                "deprecated": c.deprecated,
            }
            for c in choices
        ],
        safe=False,
    )


@api_view(["GET"])
async def model_listing(request: HttpRequest, provider: str) -> JsonResponse:
    """The models the provider lists for the user's key, each with its pricing
    ("own", "fallback" or "none") and whether the user may use it."""
    if provider not in registry.enabled():
        raise ApiError(404, "unknown_provider", "No such provider.")
    try:
        listing = await keys.models_listed(user=request.user, provider=provider)  # type: ignore[arg-type]
    except keys.KeyProblem as exc:
        raise ApiError(400, exc.code, exc.message, provider=provider) from None
    except ProviderError as exc:
        raise ApiError(502, exc.code, exc.message, provider=provider) from None
    listed = await sync_to_async(selectors.listed_models)(request.user, provider, listing)  # type: ignore[arg-type]
    return JsonResponse(
        [
            {
                "provider": m.provider,
                "model": m.model,
                "pricing": m.pricing,
                "input_per_mtok": money(m.price.input_per_mtok) if m.price else None,
                "output_per_mtok": money(m.price.output_per_mtok) if m.price else None,
                "usable": m.usable,
                "reason": m.reason,
            }
            for m in listed
        ],
        safe=False,
    )


def _date_param(request: HttpRequest, name: str) -> datetime | None:
    raw = request.GET.get(name)
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
        if not date(1970, 1, 1) <= day <= date(9000, 12, 31):
            raise ValueError(raw)
    except ValueError:
        raise ApiError(
            400, "invalid", f"'{name}' must be a date (YYYY-MM-DD).", field=name
        ) from None
    return datetime.combine(day, datetime.min.time(), UTC)


def _usage_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["cost"] = money(row["cost"])
    if isinstance(out.get("day"), date):
        out["day"] = out["day"].isoformat()
    return out


@api_view(["GET"])
def usage(request: HttpRequest) -> JsonResponse:
    """Spend between since (inclusive) and until (inclusive) — default: this month."""
    since = _date_param(request, "since")
    until = _date_param(request, "until")
    if since is None and until is None:
        since = budgets.month_bounds()[0]
    if until is not None:
        until += timedelta(days=1)
    if since and until and since >= until:
        raise ApiError(400, "invalid", "'since' must be before 'until'.", field="since")
    summary = selectors.usage_summary(request.user, since, until)  # type: ignore[arg-type]
    budget = budgets.budget_status(request.user)  # type: ignore[arg-type]
    return JsonResponse(
        {
            "budget": {
                "limit": money(budget.limit),
                "spent_this_month": money(budget.spent),
                "server_key_limit": money(budget.server_limit),
                "server_key_spent_this_month": money(budget.server_spent),
                "resets_at": budget.resets_at.isoformat(),
                "warning": budget.warning,
                "exceeded": budget.exceeded,
            },
            "since": since.date().isoformat() if since else None,
            "until": (until - timedelta(days=1)).date().isoformat() if until else None,
            "totals": _usage_row(summary["totals"]),
            "by_model": [_usage_row(r) for r in summary["by_model"]],
            "by_day": [_usage_row(r) for r in summary["by_day"]],
        }
    )
