"""The chat turn's writes (seed: chat.py -> UserService -> AIService -> pricing ->
save), one ORM path on every database.

A turn has two halves around the provider call: `chat_start` refuses what can be
refused, takes the conversation, saves the user's message with the reply's row
("generating") and opens the call's ledger row, all before the provider is
called; `chat_finish` saves the reply — complete, partial, stopped or failed —
with its usage and cost, settles the ledger row and frees the conversation.
Between the two, conversations.streaming runs the generation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.db.models import Case, F, IntegerField, TextField, Value, When
from django.http import Http404
from django.utils import timezone
from django.utils.html import linebreaks

from conversations import budgets, ledger
from conversations import parameters as model_parameters
from conversations.markdown import render_markdown
from conversations.models import Conversation, Message, Status
from conversations.selectors import reply_for_user
from llmchat import ratelimit
from pricing.models import ModelPrice, price_for
from providers import registry
from providers.base import (
    ChatMessage,
    ChatRequest,
    Credentials,
    Provider,
    ProviderError,
    Usage,
    clean_text,
)
from providers.keys import KeyProblem, credentials_for

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TITLE_LENGTH = 60


class ChatRefused(Exception):
    """A turn that cannot start: a 4xx for the client, nothing saved."""

    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        super().__init__(message)


@dataclass
class Turn:
    """A turn started: its reply is to be generated."""

    conversation: Conversation
    user_message: Message | None
    assistant_message: Message
    request: ChatRequest
    creds: Credentials
    started_at: datetime
    # The price in effect when the turn started (None: unpriced); its cost uses it.
    price: ModelPrice | None = None
    # The provider to call (none for a turn closed by the sweeper).
    adapter: Provider | None = None


@dataclass
class Replay:
    """A message sent again with its client_message_id (a retry, a double click)
    whose reply is final already: answered with that reply, no provider call."""

    conversation: Conversation
    user_message: Message
    assistant_message: Message


def check_model(provider: str, model: str) -> None:
    """An enabled provider and a model id that could be one (ChatRefused otherwise):
    for a turn, a preset, a favourite or an estimate alike."""
    if provider not in registry.enabled():
        raise ChatRefused(400, "unknown_provider", "Unknown provider.", field="provider")
    if not model or len(model) > 200 or not model.isprintable():
        raise ChatRefused(400, "invalid", "Pick a model.", field="model")


def _validate(
    *, provider: str, model: str, message: str, system_prompt: str | None, client_message_id: str
) -> None:
    check_model(provider, model)
    if "\x00" in message or (system_prompt and "\x00" in system_prompt):
        raise ChatRefused(400, "invalid", "The text contains a NUL character.", field="message")
    if len(message) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatRefused(
            413,
            "message_too_long",
            f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS:,} characters.",
            field="message",
        )
    if system_prompt is not None and len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise ChatRefused(
            400,
            "system_prompt_too_long",
            f"System prompts are limited to {settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:,} characters.",
            field="system_prompt",
        )
    if client_message_id and not _CLIENT_ID.match(client_message_id):
        raise ChatRefused(
            400,
            "invalid",
            "client_message_id: up to 64 letters, digits, - _ . :",
            field="client_message_id",
        )


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    if len(line) <= TITLE_LENGTH:
        return line or "New conversation"
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0]
    return (cut or line[:TITLE_LENGTH]) + "…"


def chat_start(
    *,
    user: User,
    conversation_id: int | None,
    provider: str,
    model: str,
    message: str,
    system_prompt: str | None = None,
    client_message_id: str = "",
    regenerate: bool = False,
    parameters: dict[str, Any] | None = None,
) -> Turn | Replay:
    """Start a turn, or answer a repeated message again (Replay); ChatRefused for
    anything that cannot start, with nothing saved. `parameters`: the model
    parameters to use from now on in the conversation (None: the ones it has)."""
    message = message.strip()
    if not regenerate and not message:
        raise ChatRefused(400, "required", "Write a message first.", field="message")
    _validate(
        provider=provider,
        model=model,
        message=message,
        system_prompt=system_prompt,
        client_message_id=client_message_id,
    )
    adapter = registry.get(provider)
    model = adapter.canonical_model(model)
    _check_rate(user)
    try:
        creds = credentials_for(user=user, provider=provider)
    except KeyProblem as exc:
        raise ChatRefused(400, exc.code, exc.message, provider=provider) from None

    now = timezone.now()
    price = price_for(provider, model, at=now)
    if parameters is not None:
        try:
            parameters = model_parameters.clean(adapter, parameters, price)
        except model_parameters.InvalidParameter as exc:
            raise ChatRefused(400, "invalid", exc.message, field=exc.field) from None
    slot = f"user:{user.pk}"
    try:
        if adapter.needs_key:  # the free demo never counts against a budget
            _check_budget(user, creds)
            _check_priced(user, creds, model, price)
        if not ratelimit.acquire_slot(
            slot, settings.CHAT_MAX_CONCURRENT_STREAMS, settings.CHAT_STREAM_MAX_SECONDS
        ):
            raise ChatRefused(
                429,
                "too_many_streams",
                f"You already have {settings.CHAT_MAX_CONCURRENT_STREAMS} replies streaming. "
                "Wait for one to finish.",
                retry_after=5,
            )
    except ChatRefused:
        # A retried message that was answered already is answered again, whatever
        # its reply cost or however many streams are open now.
        earlier = _replay(user, client_message_id)
        if earlier is not None:
            return earlier
        raise
    try:
        started = _open_turn(
            user=user,
            conversation_id=conversation_id,
            provider=provider,
            model=model,
            message=message,
            system_prompt=system_prompt,
            client_message_id=client_message_id,
            regenerate=regenerate,
            parameters=parameters,
            creds=creds,
            price=price,
            adapter=adapter,
            now=now,
        )
    except BaseException:
        ratelimit.release_slot(slot)
        raise
    if isinstance(started, Replay):  # streams nothing: no slot
        ratelimit.release_slot(slot)
    return started


def _check_rate(user: User) -> None:
    rate = ratelimit.parse_rate(settings.CHAT_RATE_LIMIT)
    if rate is None:
        return
    wait = ratelimit.hit(f"chat:{user.pk}", rate)
    if wait is not None:
        raise ChatRefused(
            429,
            "rate_limited",
            f"Too many messages: the limit is {rate.limit} per {_window_name(rate.window)}. "
            f"Try again in {wait} second{'s' if wait != 1 else ''}.",
            retry_after=wait,
        )


def _window_name(seconds: int) -> str:
    names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    return names.get(seconds, f"{seconds} seconds")


def _check_budget(user: User, creds: Credentials) -> None:
    server_limited = creds.key_source == "server" and budgets.server_key_limit() is not None
    if budgets.user_limit(user) is None and not server_limited:
        return  # no limit applies: skip summing the month's ledger
    status = budgets.budget_status(user)
    resets = f"{status.resets_at:%B} {status.resets_at.day}, {status.resets_at.year}"
    if status.exceeded:
        raise ChatRefused(
            402,
            "budget_exceeded",
            f"You have used your monthly budget of ${status.limit} (spent ${status.spent:.2f}). "
            f"It resets on {resets} (UTC).",
            limit=str(status.limit),
            resets_at=status.resets_at.isoformat(),
        )
    if creds.key_source == "server" and status.server_exceeded:
        raise ChatRefused(
            402,
            "server_budget_exceeded",
            f"You have used this month's allowance of ${status.server_limit} on the server's "
            f"keys. It resets on {resets} (UTC); add your own key to keep going now.",
            limit=str(status.server_limit),
            resets_at=status.resets_at.isoformat(),
        )


def _check_priced(user: User, creds: Credentials, model: str, price: ModelPrice | None) -> None:
    """A call on the operator's keys, or under a budget, needs a price: without
    one it would be spend that no limit sees. Refused before the provider is
    called; a user's own key with no budget may still use an unpriced model."""
    refusal = budgets.unpriced_refusal(user, creds.key_source, model) if price is None else None
    if refusal is not None:
        raise ChatRefused(400, "unpriced_model", refusal, field="model")


def release_turn(turn: Turn) -> None:
    """Give back the stream slot a turn took (after its reply is saved)."""
    ratelimit.release_slot(f"user:{turn.conversation.user_id}")


def _open_turn(
    *,
    user: User,
    conversation_id: int | None,
    provider: str,
    model: str,
    message: str,
    system_prompt: str | None,
    client_message_id: str,
    regenerate: bool,
    parameters: dict[str, Any] | None,
    creds: Credentials,
    price: ModelPrice | None,
    adapter: Provider,
    now: datetime,
) -> Turn | Replay:
    """Take the conversation, save the user's message with the reply's row
    ("generating") and open the call's ledger row, in one transaction."""
    with transaction.atomic():
        if client_message_id:
            # Two sends of one message (a double click, a retry racing the first)
            # wait for each other here, so the second sees the first's message.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            earlier = _replay(user, client_message_id)
            if earlier is not None:
                return earlier
        if conversation_id is None:
            conversation = _new_conversation(
                user, provider, model, system_prompt, _title_from(message), parameters, now
            )
            history: list[ChatMessage] = []
        else:
            conversation = _take_conversation(
                user,
                conversation_id,
                provider,
                model,
                system_prompt,
                _title_from(message),
                parameters,
                now,
            )
            if regenerate:
                _drop_last_reply(conversation)
            history = _history(conversation)
        if not regenerate:
            history.append(ChatMessage("user", message))
        if not history or history[-1].role != "user":
            raise ChatRefused(400, "nothing_to_answer", "There is no message to answer.")
        used = model_parameters.carried(adapter, conversation.parameters, price)
        user_message, assistant = _new_messages(
            conversation,
            message=None if regenerate else message,
            client_message_id=client_message_id,
            provider=provider,
            model=model,
            key_source=creds.key_source,
            parameters=used,
            now=now,
        )
        request = ChatRequest(
            model=model,
            messages=history,
            system=conversation.system_prompt,
            max_output_tokens=used.get("max_output_tokens") or _max_output_tokens(provider, price),
            temperature=used.get("temperature"),
            reasoning_effort=used.get("reasoning_effort"),
            thinking_budget=used.get("thinking_budget"),
        )
        ledger.open_call(
            conversation=conversation, reply=assistant, request=request, price=price, started_at=now
        )
    return Turn(
        conversation, user_message, assistant, request, creds, now, price=price, adapter=adapter
    )


def _new_conversation(
    user: User,
    provider: str,
    model: str,
    system_prompt: str | None,
    title: str,
    parameters: dict[str, Any] | None,
    now: datetime,
) -> Conversation:
    return Conversation.objects.create(
        user=user,
        title=title,
        provider=provider,
        model=model,
        system_prompt=system_prompt or "",
        parameters=parameters or {},
        created=now,
        updated=now,
        busy_until=now + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS),
    )


def _take_conversation(
    user: User,
    conversation_id: int,
    provider: str,
    model: str,
    system_prompt: str | None,
    title: str,
    parameters: dict[str, Any] | None,
    now: datetime,
) -> Conversation:
    """The user's conversation, locked and taken for this turn (busy_until): 404
    if it is not theirs, 409 while another reply is being written in it. A
    taking whose turn outlived any stream (its process died) is swept first."""
    conversation = (
        Conversation.objects.select_for_update().filter(pk=conversation_id, user=user).first()
    )
    if conversation is None:
        raise Http404("No such conversation.")
    if conversation.busy_until is not None:
        if conversation.busy_until >= now:
            raise ChatRefused(
                409,
                "busy",
                "A reply is still being written in this conversation. Wait or stop it.",
            )
        sweep_stale_replies(conversation_id=conversation.pk)
    conversation.busy_until = now + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS)
    conversation.updated = now
    conversation.provider = provider
    conversation.model = model
    if not conversation.title:  # only an untitled conversation is named
        conversation.title = title
    if system_prompt is not None:
        conversation.system_prompt = system_prompt
    if parameters is not None:
        conversation.parameters = parameters
    conversation.save(
        update_fields=[
            "busy_until",
            "updated",
            "provider",
            "model",
            "title",
            "system_prompt",
            "parameters",
        ]
    )
    conversation.user = user  # known: no query for it later (the ledger row)
    return conversation


def _new_messages(
    conversation: Conversation,
    *,
    message: str | None,
    client_message_id: str,
    provider: str,
    model: str,
    key_source: str,
    parameters: dict[str, Any],
    now: datetime,
) -> tuple[Message | None, Message]:
    """A turn's user message (none when regenerating) and its reply's row
    ("generating"), saved in one INSERT; the user's gets the lower id."""
    user_message = None
    if message is not None:
        user_message = Message(
            conversation=conversation,
            role="user",
            content=message,
            client_message_id=client_message_id,
            created=now,
        )
    assistant = Message(
        conversation=conversation,
        role="assistant",
        status=Status.GENERATING,
        provider=provider,
        model=model,
        key_source=key_source,
        parameters=parameters,
        created=now,
    )
    Message.objects.bulk_create([m for m in (user_message, assistant) if m is not None])
    return user_message, assistant


def _drop_last_reply(conversation: Conversation) -> None:
    last = conversation.messages.order_by("-id").first()
    if last is None:
        raise ChatRefused(400, "nothing_to_answer", "There is no message to answer.")
    if last.role == "assistant":
        # Its ledger row stays (message set to NULL): it was paid for.
        last.delete()


def conversation_history(conversation: Conversation) -> list[ChatMessage]:
    """The messages a next turn in the conversation would send before its own."""
    return _history(conversation)


def _history(conversation: Conversation, *, before: int | None = None) -> list[ChatMessage]:
    messages = Message.objects.filter(conversation=conversation).order_by("id")
    if before is not None:
        messages = messages.filter(id__lt=before)
    # Tuples, not model instances: a long conversation is read on every turn.
    return _history_of(messages.values_list("role", "content", "status"))


def _history_of(rows: Iterable[tuple[str, str, str]]) -> list[ChatMessage]:
    """The messages of a conversation the provider is sent, from its (role,
    content, status) rows in order."""
    history = []
    for role, content, status in rows:
        if role == "assistant" and (status in (Status.ERROR, Status.GENERATING) or not content):
            continue  # failed, empty, or an unfinished reply (a dead stream's)
        history.append(ChatMessage(role, content))  # type: ignore[arg-type]
    return history


def _max_output_tokens(provider: str, price: ModelPrice | None) -> int | None:
    if provider != "anthropic":
        return None  # the others have sensible defaults of their own
    limit = settings.DEFAULT_MAX_OUTPUT_TOKENS
    if price is not None and price.max_output_tokens:
        limit = min(limit, price.max_output_tokens)
    return limit


def _replay(user: User, client_message_id: str) -> Replay | None:
    """The earlier turn of a message sent again with the same client_message_id,
    to be answered again (None without an id or such a message); ChatRefused(409)
    while its reply is still being written."""
    if not client_message_id:
        return None
    earlier = (
        Message.objects.filter(
            conversation__user=user, role="user", client_message_id=client_message_id
        )
        .select_related("conversation")
        .first()
    )
    if earlier is None:
        return None
    reply = (
        Message.objects.filter(
            conversation=earlier.conversation, role="assistant", id__gt=earlier.pk
        )
        .order_by("id")
        .first()
    )
    if reply is None or reply.status == Status.GENERATING:
        raise ChatRefused(
            409,
            "in_progress",
            "This message is already being answered.",
            message_id=reply.pk if reply is not None else None,
        )
    return Replay(earlier.conversation, earlier, reply)


CHECKPOINT_BATCH = 100
_USAGE_FIELDS = (
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True)
class Progress:
    """A reply so far: its text and the usage the provider reported until now."""

    text: str
    usage: Usage | None


def chat_checkpoint(progress: dict[int, Progress]) -> None:
    """Save replies so far (by message id), so that a process that dies mid-reply
    loses little of them and its reply is closed with the usage known: one UPDATE
    for up to CHECKPOINT_BATCH replies. A reply that is final already (its save
    got there first) is left as it is."""
    items = list(progress.items())
    for start in range(0, len(items), CHECKPOINT_BATCH):
        batch = items[start : start + CHECKPOINT_BATCH]
        changes: dict[str, Case] = {
            "content": Case(
                *[When(pk=pk, then=Value(p.text)) for pk, p in batch],
                default=F("content"),
                output_field=TextField(),
            )
        }
        with_usage = [(pk, p.usage) for pk, p in batch if p.usage is not None]
        if with_usage:
            for name in _USAGE_FIELDS:
                changes[name] = Case(
                    *[When(pk=pk, then=Value(getattr(u, name))) for pk, u in with_usage],
                    default=F(name),
                    output_field=IntegerField(),
                )
        Message.objects.filter(pk__in=[pk for pk, _ in batch], status=Status.GENERATING).update(
            **changes
        )


def stops_requested(message_ids: Iterable[int]) -> set[int]:
    """Which of these generating replies someone asked to stop (conversations.streaming
    asks for the ones it runs, each checkpoint)."""
    return set(
        Message.objects.filter(
            pk__in=list(message_ids), status=Status.GENERATING, stop_requested=True
        ).values_list("pk", flat=True)
    )


def chat_stop(*, user: User, message_id: int) -> Message:
    """Ask for a generating reply to stop, from any tab or process: the process
    that runs it reads the request at its next checkpoint (conversations.streaming
    stops it at once when it runs where the request came). A reply that is final
    already is left as it is."""
    reply = reply_for_user(user, message_id)
    if reply.status == Status.GENERATING:
        Message.objects.filter(pk=reply.pk, status=Status.GENERATING).update(stop_requested=True)
    return reply


def stale_after() -> timedelta:
    """How old a "generating" reply must be to be taken for dead: generations end
    themselves 30 s before CHAT_STREAM_MAX_SECONDS, and a minute more of grace
    means only a dead one is ever swept."""
    return timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 60)


SAVE_FAILED = "server_error"
"""The error code of a reply whose save failed and that was closed as failed."""


def chat_finish(
    *,
    turn: Turn,
    text: str,
    status: str,
    usage: Usage | None,
    usage_final: bool,
    error: ProviderError | None = None,
    ttft_ms: int | None = None,
    latency_ms: int | None = None,
    provider_called: bool = True,
) -> Message:
    """Save the reply with its usage and cost, settle its ledger row, free the
    conversation. Safe to call once per turn; a second call changes nothing.
    `provider_called=False`: the turn ended before the provider was called (the
    client left first): nothing was billed.

    The call is recorded whatever happened meanwhile: a reply deleted while it
    streamed (with its conversation, or the account) still settles its ledger
    row, and a reply that cannot be saved as it is (the database refused a
    value) is saved again, closed as failed, with its ledger row."""
    assistant = turn.assistant_message
    if provider_called:
        settled = ledger.settle_usage(turn.request, text, usage, usage_final, turn.price, error)
    else:
        settled = ledger.Settled.at(Usage(), turn.price, estimated=False)
    reply: dict[str, Any] = {
        "content": text,
        "html": _html(text),
        "status": status,
        **settled.fields(),
        "usage_estimated": settled.estimated,
        "ttft_ms": ttft_ms,
        "latency_ms": latency_ms,
        "error_code": error.code if error else "",
        "error_message": error.message[:500] if error else "",
    }
    try:
        saved, recorded = _save_reply(turn, reply, settled)
    except Exception:
        # Whatever the database refused, the call is recorded and the turn ends.
        logger.exception("saving a reply failed: it is closed as failed")
        _drop_broken_connections()
        reply.update(
            content=clean_text(text),  # (the stream's own cleaning, should it have been bypassed)
            html="",
            status=Status.ERROR,
            error_code=SAVE_FAILED,
            error_message="The reply could not be saved in full.",
        )
        saved, recorded = _save_reply(turn, reply, settled)
    if saved is _Saved.BEFORE:
        assistant.refresh_from_db()  # finished earlier (swept): what was saved then
    else:
        for name, value in reply.items():
            setattr(assistant, name, value)
    if recorded:
        ledger.record_metrics(assistant, settled, ttft_ms=ttft_ms, latency_ms=latency_ms)
    logger.info(
        "chat turn",
        extra={
            "user_id": turn.conversation.user_id,
            "provider": assistant.provider,
            "model": assistant.model,
            "key_source": assistant.key_source,
            "input_tokens": assistant.input_tokens,
            "output_tokens": assistant.output_tokens,
            "cost": str(assistant.cost) if assistant.cost is not None else None,
            "latency_ms": latency_ms,
            "ttft_ms": ttft_ms,
            "outcome": assistant.status,
            "error_code": assistant.error_code,
            "reply_deleted": saved is _Saved.GONE,
        },
    )
    return assistant


class _Saved(Enum):
    NOW = "now"  # this call saved the reply
    BEFORE = "before"  # the reply was final already (swept): left as it was
    GONE = "gone"  # the reply was deleted while it streamed


def _save_reply(turn: Turn, reply: dict[str, Any], settled: ledger.Settled) -> tuple[_Saved, bool]:
    """The reply saved if it is still generating, its call settled in the ledger,
    and the conversation freed — only by the turn that saved its reply (a stream
    the sweeper already closed must not unlock a newer turn). Also whether this
    call settled the ledger row."""
    assistant = turn.assistant_message
    conversation = Conversation.objects.filter(pk=turn.conversation.pk)
    free: dict[str, Any] = {"busy_until": None, "updated": timezone.now()}

    def record() -> bool:
        return ledger.settle(
            reply=assistant,
            conversation=turn.conversation,
            settled=settled,
            outcome=reply["status"],
        )

    with transaction.atomic():
        # The order a deletion locks them in (conversations.services), so the two
        # never deadlock: the conversation, the ledger row, then the reply.
        conversation.select_for_update().first()
        ledger.lock(assistant)
        if Message.objects.filter(pk=assistant.pk, status=Status.GENERATING).update(**reply):
            recorded = record()
            conversation.update(**free)
            return _Saved.NOW, recorded
    if Message.objects.filter(pk=assistant.pk).exists():
        return _Saved.BEFORE, False
    # Deleted while it streamed (with its conversation or its account, or alone):
    # the call was made and is billed all the same.
    with transaction.atomic():
        recorded = record()
        conversation.update(**free)  # (still there if only the reply was deleted)
    return _Saved.GONE, recorded


def _html(text: str) -> str:
    """The reply's Markdown as safe HTML; as escaped plain text should the
    renderer fail on it (model output is untrusted, and the reply must be saved)."""
    if not text:
        return ""
    try:
        return render_markdown(text)
    except Exception:
        logger.exception("rendering a reply failed: it is shown as plain text")
        return linebreaks(text, autoescape=True)


def _drop_broken_connections() -> None:
    """After a failed save, a connection that broke is replaced before the next."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def sweep_stale_replies(*, conversation_id: int | None = None) -> int:
    """Close replies still "generating" long after any generation could have lasted
    (their process died): partial if some text was saved, else error, with the
    usage its last checkpoint saved (completed with an estimate); and
    (sweeping every conversation) the ledger rows of such replies that were
    deleted meanwhile. How many were closed."""
    cutoff = timezone.now() - stale_after()
    stale = Message.objects.filter(status=Status.GENERATING, created__lt=cutoff).select_related(
        "conversation__user"
    )
    if conversation_id is not None:
        stale = stale.filter(conversation_id=conversation_id)
    swept = 0
    for message in stale:
        conversation = message.conversation
        history = _history(conversation, before=message.pk)
        turn = Turn(
            conversation,
            None,
            message,
            ChatRequest(model=message.model, messages=history, system=conversation.system_prompt),
            Credentials("", "", "none"),
            message.created,
            price=price_for(message.provider, message.model, at=message.created),
        )
        so_far = Usage(**{name: getattr(message, name) for name in _USAGE_FIELDS})
        chat_finish(
            turn=turn,
            text=message.content,
            status=Status.PARTIAL if message.content else Status.ERROR,
            usage=so_far if so_far != Usage() else None,
            usage_final=False,
            error=ProviderError("unavailable", "The reply was interrupted."),
        )
        swept += 1
    if conversation_id is None:
        swept += ledger.close_abandoned(cutoff)
    return swept
