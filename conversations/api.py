"""The chat JSON API (session auth + CSRF). The chat pages use it; the contract is
documented in docs/api.md and kept stable.

POST /api/chat starts a turn and follows its reply as Server-Sent Events: `start`,
`delta`..., then `done` or `error`. Everything that can be refused is refused
before the stream starts, as a JSON 4xx. The reply belongs to the server
(conversations.streaming): a client that leaves can come back to it with
GET /api/chat/<reply>/events, and POST /api/chat/<reply>/stop stops it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.template.loader import render_to_string

from conversations import (
    budgets,
    estimates,
    favourites,
    presets,
    selectors,
    services,
    streaming,
    turns,
)
from conversations.models import Message, Status
from conversations.serializers import (
    conversation_detail_json,
    conversation_json,
    message_json,
    money,
    preset_json,
)
from llmchat.api import (
    ApiError,
    api_view,
    bool_field,
    error_response,
    id_field,
    read_json,
    string_field,
)
from providers import keys, registry
from providers.base import ProviderError

logger = logging.getLogger(__name__)

MAX_CHAT_BODY = 1024 * 1024


# --- The chat turn ---------------------------------------------------------------------


def _chat_fields(data: dict[str, Any]) -> dict[str, Any]:
    conversation = id_field(data, "conversation")
    regenerate = bool_field(data, "regenerate", default=False)
    return {
        "conversation_id": conversation,
        "provider": string_field(data, "provider"),
        "model": string_field(data, "model"),
        "message": string_field(data, "message", required=not regenerate),
        "system_prompt": _system_prompt(data),
        "client_message_id": string_field(data, "client_message_id", required=False),
        "regenerate": regenerate,
        "parameters": data.get("parameters"),
        "render": bool_field(data, "render", default=False),
    }


def _system_prompt(data: dict[str, Any]) -> str | None:
    """The system prompt sent, or None: the conversation's stays."""
    system_prompt = data.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ApiError(400, "invalid", "'system_prompt' must be a string.", field="system_prompt")
    return system_prompt


@contextmanager
def _refusals_as_api_errors() -> Iterator[None]:
    """What the services refuse (ChatRefused), answered as the API's JSON errors."""
    try:
        yield
    except turns.ChatRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from None


@api_view(["POST"])
async def chat(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    fields = _chat_fields(read_json(request, max_bytes=MAX_CHAT_BODY))
    render = fields.pop("render")
    try:
        started = await sync_to_async(_chat_start)(request.user, fields)
    except turns.ChatRefused as exc:
        refused = error_response(exc.status, exc.code, exc.message, **exc.extra)
        if "retry_after" in exc.extra:
            refused["Retry-After"] = str(exc.extra["retry_after"])
        return refused
    reply = started.assistant_message
    if isinstance(started, turns.Replay):
        events = streaming.ended(reply, 0)
    else:
        streaming.start(started)
        events = streaming.follow(reply, render=render)
    start = {
        "conversation": started.conversation.pk,
        "user_message": started.user_message.pk if started.user_message else None,
        "message": reply.pk,
        "title": started.conversation.title,
    }
    return _event_stream(_sse("start", start, event_id=0), events, reply.pk)


def _chat_start(user: Any, fields: dict[str, Any]) -> turns.Turn | turns.Replay:
    """chat_start in the request's thread, which then gives its database
    connection back: the reply's stream may last minutes."""
    try:
        return turns.chat_start(user=user, **fields)
    finally:
        streaming.release_connections()


@api_view(["POST"])
async def chat_estimate(request: HttpRequest) -> JsonResponse:
    """The next turn's input, estimated while the user types; nothing is recorded."""
    data = read_json(request, max_bytes=MAX_CHAT_BODY)
    system_prompt = _system_prompt(data)
    with _refusals_as_api_errors():
        estimate = await estimates.next_turn_input(
            user=await request.auser(),  # type: ignore[arg-type]
            conversation_id=id_field(data, "conversation"),
            provider=string_field(data, "provider"),
            model=string_field(data, "model"),
            message=string_field(data, "message", required=False),
            system_prompt=system_prompt,
        )
    return JsonResponse(
        {
            "input_tokens": estimate.input_tokens,
            "method": estimate.method,
            "input_cost": money(estimate.cost),
            "budget_left": money(estimate.budget_left),
        }
    )


@api_view(["GET"])
async def chat_events(request: HttpRequest, message_id: int) -> StreamingHttpResponse:
    """A reply's events from a cursor on (`?after=` or the Last-Event-ID header: the
    id of the last event received): what was missed, then the rest as it comes."""
    after = _cursor(request)
    render = request.GET.get("render") in ("1", "true")
    reply = await sync_to_async(_reply_of)(request.user, message_id)
    if reply.status == Status.GENERATING:
        events = streaming.follow(reply, after=after, render=render)
    else:
        events = streaming.ended(reply, after)
    return _event_stream("", events, reply.pk)


def _cursor(request: HttpRequest) -> int:
    raw = request.GET.get("after") or request.headers.get("Last-Event-ID") or "0"
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ApiError(
            400, "invalid", "'after' must be an event id (a whole number).", field="after"
        )
    return int(raw)


def _reply_of(user: Any, message_id: int) -> Message:
    """The user's reply, or 404; then the request's connection goes back (as in _chat_start)."""
    try:
        return selectors.reply_for_user(user, message_id)
    finally:
        streaming.release_connections()


@api_view(["POST"])
async def chat_stop(request: HttpRequest, message_id: int) -> JsonResponse:
    """Stop a reply, from any tab: its generation saves what it has, as stopped."""
    reply = await sync_to_async(turns.chat_stop)(user=request.user, message_id=message_id)  # type: ignore[arg-type]
    stopping = reply.status == Status.GENERATING
    if stopping:
        streaming.stop_here(reply.pk)  # at once when it runs on this worker
    return JsonResponse({"message": reply.pk, "stopping": stopping})


def _sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _event_stream(
    first: str, events: AsyncIterator[streaming.Event], reply_id: int
) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        if first:
            yield first
        offset = 0
        async for event in events:
            if isinstance(event, streaming.Text):
                offset = event.offset
                yield _sse("delta", {"text": event.text}, event_id=offset)
            elif isinstance(event, streaming.Rendered):
                # No id: a client resumes after the text it has, not after a rendering.
                yield _sse("render", {"html": event.html, "offset": event.offset})
            elif isinstance(event, streaming.Ended):
                yield _final_event(event.message, offset, reply_id)
            else:
                yield ": keep-alive\n\n"

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _final_event(message: Message | None, offset: int, reply_id: int) -> str:
    if message is None:
        return _sse(
            "error",
            {
                "code": turns.SAVE_FAILED,
                "message": "The reply could not be saved. Reload the page in a while.",
                "message_id": reply_id,
            },
            event_id=offset,
        )
    body = message_json(message)
    if message.status == Status.GENERATING:  # its process died; the sweeper closes it
        return _sse(
            "error",
            {
                "code": "interrupted",
                "message": "The reply was interrupted.",
                "message_id": message.pk,
                **body,
            },
            event_id=offset,
        )
    if message.status in (Status.ERROR, Status.PARTIAL):
        return _sse(
            "error",
            {
                "code": message.error_code or "unavailable",
                "message": message.error_message or "The reply failed.",
                "message_id": message.pk,
                **body,
            },
            event_id=offset,
        )
    return _sse("done", {"message": message.pk, **body}, event_id=offset)


# --- Conversations ------------------------------------------------------------------


@api_view(["GET"])
def conversation_list(request: HttpRequest) -> JsonResponse:
    q = request.GET.get("q", "")[:200].replace("\x00", "")
    shown = request.GET.get("archived")
    archived = None if q and shown is None else shown in ("1", "true")
    conversations = selectors.conversation_list(request.user, q=q, archived=archived)  # type: ignore[arg-type]
    return JsonResponse(
        [conversation_json(c, c.total_cost, c.unpriced_calls) for c in conversations],  # type: ignore[attr-defined]
        safe=False,
    )


@api_view(["GET", "PATCH", "DELETE"])
def conversation_detail(request: HttpRequest, pk: int) -> JsonResponse:
    user = request.user
    with _refusals_as_api_errors():
        if request.method == "DELETE":
            services.conversation_delete(user=user, pk=pk)  # type: ignore[arg-type]
            return JsonResponse({"deleted": True})
        if request.method == "PATCH":
            _patch_conversation(user, pk, read_json(request, max_bytes=16 * 1024))
        detail = selectors.conversation_detail(user, pk)  # type: ignore[arg-type]
    return JsonResponse(
        conversation_detail_json(
            detail.conversation, detail.total_cost, detail.unpriced_calls, detail.messages
        )
    )


def _patch_conversation(user: Any, pk: int, data: dict[str, Any]) -> None:
    """{"title"?, "pinned"?, "archived"?}: at least one."""
    flags = {name: bool_field(data, name) for name in ("pinned", "archived") if name in data}
    if "title" not in data and not flags:
        raise ApiError(400, "required", "Send a title, pinned or archived.", field="title")
    if "title" in data:
        services.conversation_rename(user=user, pk=pk, title=string_field(data, "title"))
    if flags:
        services.conversation_file(user=user, pk=pk, **flags)


@api_view(["GET"])
def conversation_export(request: HttpRequest, pk: int) -> HttpResponse:
    fmt = request.GET.get("format", "md")
    if fmt not in ("md", "json"):
        raise ApiError(400, "invalid", "format is md or json.", field="format")
    detail = selectors.conversation_detail(request.user, pk)  # type: ignore[arg-type]
    c = detail.conversation
    slug = f"conversation-{c.pk}"
    if fmt == "json":
        body = conversation_detail_json(
            c, detail.total_cost, detail.unpriced_calls, detail.messages
        )
        response: HttpResponse = JsonResponse(body, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{slug}.json"'
        return response
    context = {"detail": detail, "system_lines": c.system_prompt.splitlines()}
    text = render_to_string("conversations/export.md", context)
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
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
                "favourite": c.favourite,
            }
            for c in choices
        ],
        safe=False,
    )


@api_view(["POST"])
def model_favourite(request: HttpRequest) -> JsonResponse:
    """{"provider", "model", "favourite"}: star a model, or unstar it."""
    data = read_json(request, max_bytes=4096)
    favourite = bool_field(data, "favourite")
    provider, model = string_field(data, "provider"), string_field(data, "model")
    with _refusals_as_api_errors():
        favourites.favourite_set(
            user=request.user,  # type: ignore[arg-type]
            provider=provider,
            model=model,
            favourite=favourite,
        )
    return JsonResponse({"provider": provider, "model": model, "favourite": favourite})


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


# --- Presets --------------------------------------------------------------------------


def _preset_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": string_field(data, "name"),
        "provider": string_field(data, "provider"),
        "model": string_field(data, "model"),
        "system_prompt": string_field(data, "system_prompt", required=False),
        "parameters": data.get("parameters"),
        "is_default": bool_field(data, "default", default=False),
    }


@api_view(["GET", "POST"])
def preset_list(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        fields = _preset_fields(read_json(request, max_bytes=64 * 1024))
        with _refusals_as_api_errors():
            preset = presets.preset_save(user=request.user, **fields)  # type: ignore[arg-type]
        return JsonResponse(preset_json(preset), status=201)
    mine = selectors.presets_for_user(request.user)  # type: ignore[arg-type]
    return JsonResponse([preset_json(p) for p in mine], safe=False)


@api_view(["PUT", "DELETE"])
def preset_detail(request: HttpRequest, pk: int) -> JsonResponse:
    if request.method == "DELETE":
        presets.preset_delete(user=request.user, pk=pk)  # type: ignore[arg-type]
        return JsonResponse({"deleted": True})
    fields = _preset_fields(read_json(request, max_bytes=64 * 1024))
    with _refusals_as_api_errors():
        preset = presets.preset_save(user=request.user, pk=pk, **fields)  # type: ignore[arg-type]
    return JsonResponse(preset_json(preset))
