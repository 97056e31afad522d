"""The ledger: one UsageRecord per provider call, opened when its turn starts and
settled when it ends, whatever happens meanwhile to the reply, its conversation
or the account.

A call is recorded before the provider is called: the row opens with the input
the turn sends, estimated, at the turn's price (outcome "generating"), so that a
call in flight already counts against budgets, and a call whose process died
after its conversation was deleted is still in the ledger. Its end replaces
that with what the provider reported (`settle`); rows nobody settled are closed
by the sweeper (`close_abandoned`). A row is keyed to its reply (`reply_id`),
which outlives the reply's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from conversations.models import Conversation, KeySource, Message, Status, UsageRecord
from llmchat import metrics
from pricing.calculator import calculate_cost
from providers.base import ChatRequest, ProviderError, Usage

if TYPE_CHECKING:
    from pricing.models import ModelPrice


def estimate_tokens(text: str) -> int:
    # About four characters a token on English text; only ever used flagged as
    # an estimate, when the provider reported nothing.
    return (len(text) + 3) // 4


def prompt_of(request: ChatRequest) -> str:
    return request.system + "".join(m.content for m in request.messages)


@dataclass(frozen=True)
class Settled:
    """A call's usage as the ledger records it, with its cost at its price."""

    usage: Usage
    estimated: bool
    price: ModelPrice | None
    cost: Decimal | None

    @classmethod
    def at(cls, usage: Usage, price: ModelPrice | None, *, estimated: bool) -> Settled:
        cost = calculate_cost(usage, price.as_price()) if price is not None else None
        return cls(usage, estimated, price, cost)

    def fields(self) -> dict[str, Any]:
        """The columns a reply and its ledger row share."""
        price = self.price
        return {
            "input_tokens": self.usage.input_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "cache_write_tokens": self.usage.cache_write_tokens,
            "output_tokens": self.usage.output_tokens,
            "reasoning_tokens": self.usage.reasoning_tokens,
            "cost": self.cost,
            # The setting's fallback price is no row to refer to.
            "price": price if price is not None and price.pk is not None else None,
            "fallback_price": price is not None and price.is_fallback,
        }

    def ledger_fields(self, outcome: str) -> dict[str, Any]:
        return {
            **self.fields(),
            "unpriced": self.price is None,
            "estimated": self.estimated,
            "outcome": outcome,
        }


def settle_usage(
    request: ChatRequest,
    text: str,
    usage: Usage | None,
    final: bool,
    price: ModelPrice | None,
    error: ProviderError | None,
) -> Settled:
    """What a finished call is recorded as: the provider's final usage; nothing,
    if the provider turned it away before running the model; else what it
    reported so far, completed with an estimate (flagged) — a call that failed
    or died without a word may still have been billed its input."""
    if usage is not None and final:
        return Settled.at(usage, price, estimated=False)
    if usage is None and not text and error is not None and error.refused:
        return Settled.at(Usage(), price, estimated=False)
    so_far = usage or Usage()
    return Settled.at(
        Usage.normalized(
            input_tokens=max(so_far.input_tokens, estimate_tokens(prompt_of(request))),
            cached_tokens=so_far.cached_tokens,
            cache_write_tokens=so_far.cache_write_tokens,
            output_tokens=max(so_far.output_tokens, estimate_tokens(text)),
            reasoning_tokens=so_far.reasoning_tokens,
        ),
        price,
        estimated=True,
    )


def open_call(
    *,
    conversation: Conversation,
    reply: Message,
    request: ChatRequest,
    price: ModelPrice | None,
    started_at: datetime,
) -> UsageRecord:
    """The call's row, before the provider is called: the input the turn sends,
    estimated, at its price."""
    sent = Usage(input_tokens=estimate_tokens(prompt_of(request)))
    opened = Settled.at(sent, price, estimated=True).ledger_fields(Status.GENERATING)
    row = _row(
        reply,
        conversation,
        created=started_at,
        fields=opened,
        user_id=conversation.user_id,
        conversation_id=conversation.pk,
        message_id=reply.pk,
    )
    row.save(force_insert=True)
    return row


def _row(
    reply: Message,
    conversation: Conversation,
    *,
    created: datetime,
    fields: dict[str, Any],
    user_id: int | None,
    conversation_id: int | None,
    message_id: int | None,
) -> UsageRecord:
    """A reply's ledger row, linked to those of its user, conversation and message
    that are there (None: deleted)."""
    return UsageRecord(
        user_id=user_id,
        user_email=conversation.user.email,
        conversation_id=conversation_id,
        message_id=message_id,
        reply_id=reply.pk,
        provider=reply.provider,
        model=reply.model,
        key_source=reply.key_source or KeySource.NONE,
        created=created,
        **fields,
    )


def lock(reply: Message) -> None:
    """Lock the call's row for the rest of the transaction, before its reply's:
    the order a deletion takes them in (Django's collector nulls the ledger's
    links before it deletes the messages), so the two never deadlock."""
    list(UsageRecord.objects.select_for_update().filter(reply_id=reply.pk).values_list("pk"))


def settle(*, reply: Message, conversation: Conversation, settled: Settled, outcome: str) -> bool:
    """The call's row, settled at how it ended, if it was not settled already:
    whether this call settled it. (A row missing altogether, of a turn opened
    before rows were, is written.)"""
    fields = settled.ledger_fields(outcome)
    if UsageRecord.objects.filter(reply_id=reply.pk, outcome=Status.GENERATING).update(**fields):
        return True
    if UsageRecord.objects.filter(reply_id=reply.pk).exists():
        return False
    user_id = conversation.user_id
    row = _row(
        reply,
        conversation,
        created=reply.created,
        fields=fields,
        user_id=user_id if get_user_model().objects.filter(pk=user_id).exists() else None,
        conversation_id=(
            conversation.pk if Conversation.objects.filter(pk=conversation.pk).exists() else None
        ),
        message_id=reply.pk if Message.objects.filter(pk=reply.pk).exists() else None,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:  # written meanwhile by another finish: reply_id is unique
        return False
    return True


def close_abandoned(cutoff: datetime) -> int:
    """Rows still open from before `cutoff` whose reply is gone (deleted while its
    process was dead): closed as failed, at the input estimated when they
    opened. (A reply still there is closed with its row by the sweeper.)"""
    return UsageRecord.objects.filter(
        outcome=Status.GENERATING, created__lt=cutoff, message__isnull=True
    ).update(outcome=Status.ERROR)


def record_metrics(
    reply: Message, settled: Settled, *, ttft_ms: int | None, latency_ms: int | None
) -> None:
    usage = settled.usage
    metrics.record_chat_turn(
        provider=reply.provider,
        model=_metrics_model(settled.price),
        outcome=reply.status,
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=settled.cost,
        ttft_ms=ttft_ms,
        latency_ms=latency_ms,
        error_code=reply.error_code,
    )


def _metrics_model(price: ModelPrice | None) -> str:
    """The model label of a call's metrics: the priced model's id, so that the
    number of series is bounded by the price table, not by what users send."""
    if price is None or price.pk is None or price.is_fallback:
        return metrics.OTHER
    return price.model
