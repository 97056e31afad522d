"""Conversation writes: the chat turn (seed: chat.py -> UserService -> AIService ->
pricing -> save), renaming, deleting, and the sweeper for replies whose process died.

A turn has two halves around the provider call, because the reply streams from an
async view in between: `chat_start` validates, takes the conversation, saves the
user's message (and an assistant message marked "generating") and opens the call's
ledger row *before* the provider is called; `chat_finish` saves the reply —
complete, partial, stopped or failed — with its usage and cost, and settles the
ledger row (conversations.ledger).
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
from django.db import IntegrityError, connections, transaction
from django.db.models import Case, F, Q, QuerySet, TextField, Value, When
from django.http import Http404
from django.utils import timezone
from django.utils.html import linebreaks

from conversations import budgets, ledger
from conversations.markdown import render_markdown
from conversations.models import Conversation, Message, Status
from llmchat import ratelimit
from llmchat.db import update_returning
from pricing.models import ModelPrice, price_for
from providers import registry
from providers.base import (
    ChatMessage,
    ChatRequest,
    Credentials,
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
    conversation: Conversation
    user_message: Message | None
    assistant_message: Message
    request: ChatRequest
    creds: Credentials
    started_at: datetime
    # A repeated client_message_id whose reply is already final: no provider call.
    replay: bool = False
    # The price in effect when the turn started (None: unpriced); its cost uses it.
    price: ModelPrice | None = None

    @property
    def provider(self) -> str:
        return self.assistant_message.provider


def conversation_for_user(user: User, pk: object) -> Conversation:
    """The user's conversation, or 404 — for anyone else's too."""
    try:
        return Conversation.objects.for_user(user).get(pk=int(str(pk)))
    except (Conversation.DoesNotExist, ValueError):
        raise Http404("No such conversation.") from None


def _validate(
    *, provider: str, model: str, message: str, system_prompt: str | None, client_message_id: str
) -> None:
    if provider not in registry.enabled():
        raise ChatRefused(400, "unknown_provider", "Unknown provider.", field="provider")
    if "\x00" in message or (system_prompt and "\x00" in system_prompt):
        raise ChatRefused(400, "invalid", "The text contains a NUL character.", field="message")
    if not model or len(model) > 200 or not model.isprintable():
        raise ChatRefused(400, "invalid", "Pick a model.", field="model")
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
) -> Turn:
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
        earlier = _turn_for_client_id(user, client_message_id, creds)
        if earlier is not None:
            return earlier
        raise
    try:
        turn = _open_turn(
            user=user,
            conversation_id=conversation_id,
            provider=provider,
            model=model,
            message=message,
            system_prompt=system_prompt,
            client_message_id=client_message_id,
            regenerate=regenerate,
            creds=creds,
            price=price,
            now=now,
        )
    except BaseException:
        ratelimit.release_slot(slot)
        raise
    if turn.replay:  # streams nothing: no slot
        ratelimit.release_slot(slot)
    return turn


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
    if not turn.replay:
        ratelimit.release_slot(f"user:{turn.conversation.user_id}")


class _NotTaken(Exception):
    """The conversation is not free: another reply streams in it, it is not the
    user's, or it does not exist. Which one, a second query tells."""


class _Repeated(Exception):
    """The user sent this client_message_id before."""


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
    creds: Credentials,
    price: ModelPrice | None,
    now: datetime,
) -> Turn:
    """Take the conversation, save the user's message with the reply's row
    ("generating") and open the call's ledger row, in one transaction of as few
    queries as the turn allows: each one is a round trip on the way to the
    provider's first token. Continuing a conversation is four (take it and read
    it back, read its history, insert both messages, insert the ledger row); a
    repeated client_message_id is caught by the unique constraint, and an
    unusual case (a busy, stale, missing or foreign conversation, a retry)
    costs its queries after the fact."""
    title = _title_from(message)
    history: list[ChatMessage]
    take_stale = False
    while True:
        user_message, assistant = _new_messages(
            message=None if regenerate else message,
            client_message_id=client_message_id,
            provider=provider,
            model=model,
            key_source=creds.key_source,
            now=now,
        )
        try:
            with transaction.atomic():
                if conversation_id is None:
                    if client_message_id and _client_id_used(user, client_message_id):
                        raise _Repeated
                    conversation = _new_conversation(
                        user, provider, model, system_prompt, title, now
                    )
                    history = []
                else:
                    conversation = _take_conversation(
                        user,
                        conversation_id,
                        provider,
                        model,
                        system_prompt,
                        title,
                        now,
                        take_stale=take_stale,
                    )
                    if regenerate:
                        _drop_last_reply(conversation)
                    history = _history(conversation)
                if not regenerate:
                    history.append(ChatMessage("user", message))
                if not history or history[-1].role != "user":
                    raise ChatRefused(400, "nothing_to_answer", "There is no message to answer.")
                _save_messages(conversation, user_message, assistant)
                request = ChatRequest(
                    model=model,
                    messages=history,
                    system=conversation.system_prompt,
                    max_output_tokens=_max_output_tokens(provider, price),
                )
                ledger.open_call(
                    conversation=conversation,
                    reply=assistant,
                    request=request,
                    price=price,
                    started_at=now,
                )
            break
        except (_Repeated, IntegrityError):  # the constraint on (conversation, client id)
            # This client_message_id was sent before (a retry, a double click):
            # its turn is answered again, or refused while it is still streaming.
            earlier = _turn_for_client_id(user, client_message_id, creds)
            if earlier is not None:
                return earlier
            raise ChatRefused(
                409, "in_progress", "This message is already being answered."
            ) from None
        except _NotTaken:
            assert conversation_id is not None
            existing = conversation_for_user(user, conversation_id)  # 404: missing or not theirs
            earlier = _turn_for_client_id(user, client_message_id, creds)
            if earlier is not None:
                return earlier
            if take_stale or existing.busy_until is None or existing.busy_until >= now:
                raise ChatRefused(
                    409,
                    "busy",
                    "A reply is still being written in this conversation. Wait or stop it.",
                ) from None
            # Taken by a turn that never finished: its process may have died.
            # Close that reply first, then take the conversation over.
            sweep_stale_streams(conversation_id=conversation_id)
            take_stale = True
    return Turn(conversation, user_message, assistant, request, creds, now, price=price)


def _client_id_used(user: User, client_message_id: str) -> bool:
    """Whether any of the user's conversations has this client_message_id, asked
    under a lock on the user's row: two requests starting a conversation with the
    same id at once (a double click, a retry racing the first) cannot both miss
    the other's message. (Within one conversation, the unique constraint does it.)"""
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    return Message.objects.filter(
        conversation__user=user, role="user", client_message_id=client_message_id
    ).exists()


def _new_conversation(
    user: User, provider: str, model: str, system_prompt: str | None, title: str, now: datetime
) -> Conversation:
    return Conversation.objects.create(
        user=user,
        title=title,
        provider=provider,
        model=model,
        system_prompt=system_prompt or "",
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
    now: datetime,
    *,
    take_stale: bool = False,
) -> Conversation:
    """The user's conversation, taken for this turn (busy_until) and updated for
    it, read back by the same query; _NotTaken if it is not free (or not theirs).
    A stale taking (its turn's process died) is taken over with `take_stale`."""
    taken = update_returning(
        _free_conversation(user, conversation_id, now, take_stale=take_stale),
        **_take_changes(provider, model, system_prompt, title, now),
    )
    if not taken:
        raise _NotTaken
    conversation = taken[0]
    conversation.user = user  # known: no query for it later (the ledger row)
    return conversation


def _free_conversation(
    user: User, conversation_id: int, now: datetime, *, take_stale: bool = False
) -> QuerySet[Conversation]:
    """The user's conversation, if it is free to take (or its taking is stale,
    with `take_stale`)."""
    free = Q(busy_until__isnull=True)
    if take_stale:
        free |= Q(busy_until__lt=now)
    return Conversation.objects.filter(free, pk=conversation_id, user=user)


def _take_changes(
    provider: str, model: str, system_prompt: str | None, title: str, now: datetime
) -> dict[str, Any]:
    """What taking a conversation for a turn changes in it."""
    changes: dict[str, Any] = {
        "busy_until": now + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS),
        "updated": now,
        "provider": provider,
        "model": model,
        # Only an untitled conversation is named.
        "title": Case(When(title="", then=Value(title)), default=F("title")),
    }
    if system_prompt is not None:
        changes["system_prompt"] = system_prompt
    return changes


def _save_messages(conversation: Conversation, *messages: Message | None) -> None:
    """A turn's new messages (_new_messages), in one INSERT; the first gets the
    lower id."""
    rows = [m for m in messages if m is not None]
    for row in rows:
        row.conversation = conversation
    Message.objects.bulk_create(rows)


def _new_messages(
    *,
    message: str | None,
    client_message_id: str,
    provider: str,
    model: str,
    key_source: str,
    now: datetime,
) -> tuple[Message | None, Message]:
    """A turn's user message (none without a message: regenerating) and its
    reply's row ("generating"), not saved yet."""
    user_message = None
    if message is not None:
        user_message = Message(
            role="user", content=message, client_message_id=client_message_id, created=now
        )
    assistant = Message(
        role="assistant",
        status=Status.GENERATING,
        provider=provider,
        model=model,
        key_source=key_source,
        created=now,
    )
    return user_message, assistant


def _drop_last_reply(conversation: Conversation) -> None:
    last = conversation.messages.order_by("-id").first()
    if last is None:
        raise ChatRefused(400, "nothing_to_answer", "There is no message to answer.")
    if last.role == "assistant":
        # Its ledger row stays (message set to NULL): it was paid for.
        last.delete()


def _messages_of(conversation_id: int, user: User) -> QuerySet[Message]:
    """A conversation's messages in order, if it is the user's (none otherwise)."""
    return Message.objects.filter(
        conversation_id=conversation_id, conversation__user=user
    ).order_by("id")


def _history(conversation: Conversation, *, before: int | None = None) -> list[ChatMessage]:
    messages = _messages_of(conversation.pk, conversation.user)
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


def _turn_for_client_id(user: User, client_message_id: str, creds: Credentials) -> Turn | None:
    """The earlier turn of a message sent again with the same client_message_id,
    to be answered again (None without an id or such a message); ChatRefused(409)
    while its reply still streams."""
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
        raise ChatRefused(409, "in_progress", "This message is already being answered.")
    request = ChatRequest(model=reply.model, messages=[])
    return Turn(earlier.conversation, earlier, reply, request, creds, reply.created, replay=True)


CHECKPOINT_BATCH = 100


def chat_checkpoint(texts: dict[int, str]) -> None:
    """Save replies so far (by message id), so a crash loses little of them: one
    UPDATE for up to CHECKPOINT_BATCH replies. A reply that is final already
    (its save got there first) is left as it is."""
    items = list(texts.items())
    for start in range(0, len(items), CHECKPOINT_BATCH):
        batch = items[start : start + CHECKPOINT_BATCH]
        Message.objects.filter(pk__in=[pk for pk, _ in batch], status=Status.GENERATING).update(
            content=Case(
                *[When(pk=pk, then=Value(text)) for pk, text in batch],
                default=F("content"),
                output_field=TextField(),
            )
        )


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


def sweep_stale_streams(*, conversation_id: int | None = None) -> int:
    """Close replies still "generating" long after any stream could have lasted
    (their process died): partial if some text was saved, else error; and
    (sweeping every conversation) the ledger rows of such replies that were
    deleted meanwhile. How many were closed."""
    # Streams end themselves 30 s before CHAT_STREAM_MAX_SECONDS; a minute more
    # of grace means only a dead one is ever swept.
    cutoff = timezone.now() - timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 60)
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
        chat_finish(
            turn=turn,
            text=message.content,
            status=Status.PARTIAL if message.content else Status.ERROR,
            usage=None,
            usage_final=False,
            error=ProviderError("unavailable", "The reply was interrupted."),
        )
        swept += 1
    if conversation_id is None:
        swept += ledger.close_abandoned(cutoff)
    return swept


def conversation_rename(*, user: User, pk: object, title: str) -> Conversation:
    conversation = conversation_for_user(user, pk)
    title = " ".join(title.replace("\x00", "").split())
    if not title:
        raise ChatRefused(400, "required", "A title cannot be empty.", field="title")
    if len(title) > 200:
        raise ChatRefused(400, "too_long", "Titles are limited to 200 characters.", field="title")
    conversation.title = title
    conversation.save(update_fields=["title"])
    return conversation


def conversation_delete(*, user: User, pk: object) -> None:
    """Delete a conversation and its messages. Its usage stays in the ledger."""
    conversation_for_user(user, pk).delete()
