"""Reads for the chat and usage pages and the JSON API. Each is a constant number of
queries, whatever the number of conversations or messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Count, DecimalField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.http import Http404

from conversations import budgets
from conversations.models import Conversation, FavouriteModel, Message, Preset, UsageRecord
from pricing.models import FALLBACK_MODEL, ModelPrice, prices_for
from providers import registry
from providers.keys import Listing
from providers.models import ProviderKey

if TYPE_CHECKING:
    from accounts.models import User


def conversation_for_user(user: User, pk: object) -> Conversation:
    """The user's conversation, or 404 — for anyone else's too."""
    try:
        return Conversation.objects.for_user(user).get(pk=int(str(pk)))
    except (Conversation.DoesNotExist, ValueError):
        raise Http404("No such conversation.") from None


def last_model_used(user: User) -> tuple[str, str] | None:
    """The provider and model of the user's most recently written conversation."""
    return (
        Conversation.objects.for_user(user)
        .order_by("-updated", "-id")
        .values_list("provider", "model")
        .first()
    )


def presets_for_user(user: User) -> QuerySet[Preset]:
    return Preset.objects.filter(user=user).order_by("name", "id")


def reply_for_user(user: User, pk: int) -> Message:
    """The user's reply (an assistant message), or 404 — for anyone else's too."""
    reply = Message.objects.filter(pk=pk, role="assistant", conversation__user=user).first()
    if reply is None:
        raise Http404("No such reply.")
    return reply


ZERO = Value(Decimal(0), output_field=DecimalField(max_digits=18, decimal_places=6))


def conversation_total_cost() -> Coalesce:
    """Each conversation's cost from the ledger (a regenerated reply still counts),
    as an annotation: zero when nothing was billed."""
    return Coalesce(_total_cost_subquery(), ZERO)


def _total_cost_subquery() -> Subquery:
    per_conversation = (
        UsageRecord.objects.filter(conversation=OuterRef("pk"))
        .order_by()
        .values("conversation")
        .annotate(total=Sum("cost"))
        .values("total")
    )
    return Subquery(per_conversation, output_field=DecimalField(max_digits=18, decimal_places=6))


def _unpriced_subquery() -> Subquery:
    per_conversation = (
        UsageRecord.objects.filter(conversation=OuterRef("pk"), unpriced=True)
        .order_by()
        .values("conversation")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Subquery(per_conversation)


def conversation_list(
    user: User, *, q: str = "", archived: bool | None = False
) -> QuerySet[Conversation]:
    """The user's conversations, pinned first, then newest first, each with
    `total_cost` (from the ledger, so a regenerated reply still counts) and
    `unpriced_calls`. `archived`: only those (True), none of them (False), or
    all (None; a search looks in the archive too)."""
    qs = Conversation.objects.for_user(user).annotate(
        total_cost=conversation_total_cost(),
        unpriced_calls=Coalesce(_unpriced_subquery(), Value(0)),
    )
    if archived is not None:
        qs = qs.filter(archived=archived)
    if q:
        qs = qs.filter(Q(title__icontains=q) | Q(messages__content__icontains=q)).distinct()
    return qs.order_by("-pinned", "-updated", "-id")


@dataclass
class ConversationDetail:
    conversation: Conversation
    messages: list[Message]
    total_cost: Decimal
    unpriced_calls: int


def conversation_detail(user: User, pk: object) -> ConversationDetail:
    conversation = conversation_for_user(user, pk)
    messages = list(conversation.messages.order_by("id"))
    totals = UsageRecord.objects.filter(conversation=conversation).aggregate(
        total=Coalesce(Sum("cost"), ZERO), unpriced=Count("id", filter=Q(unpriced=True))
    )
    return ConversationDetail(conversation, messages, totals["total"], totals["unpriced"])


@dataclass
class ModelChoice:
    provider: str
    provider_label: str
    model: str
    name: str
    input_per_mtok: Decimal | None
    cached_input_per_mtok: Decimal | None
    output_per_mtok: Decimal | None
    context_window: int | None
    available: bool
    deprecated: bool = False
    favourite: bool = False


def models_for_user(user: User) -> list[ModelChoice]:
    """The models the picker offers, with their prices, grouped by provider;
    `available` when the user has a key for it (or the server does)."""
    enabled = registry.enabled()
    keys = set(ProviderKey.objects.for_user(user).values_list("provider", flat=True))
    usable = {
        name
        for name, provider in enabled.items()
        if not provider.needs_key
        or name in keys
        or (settings.ALLOW_SERVER_KEYS and provider.server_credentials() is not None)
    }
    starred = set(FavouriteModel.objects.filter(user=user).values_list("provider", "model"))
    prices = (
        ModelPrice.objects.in_effect()
        .filter(active=True, provider__in=list(enabled))
        .exclude(model=FALLBACK_MODEL)
        .order_by("provider", "deprecated", "model")
    )
    choices = [
        ModelChoice(
            provider=p.provider,
            provider_label=enabled[p.provider].label,
            model=p.model,
            name=p.name or p.model,
            input_per_mtok=p.input_per_mtok,
            cached_input_per_mtok=p.cached_input_per_mtok,
            output_per_mtok=p.output_per_mtok,
            context_window=p.context_window,
            available=p.provider in usable,
            deprecated=p.deprecated,
            favourite=(p.provider, p.model) in starred,
        )
        for p in prices
    ]
    order = {
        name: i for i, name in enumerate(["demo", "openai", "anthropic", "google", "compatible"])
    }
    choices.sort(key=lambda c: order.get(c.provider, 99))
    return choices


@dataclass
class ListedModel:
    """A model the provider lists for the user's key, with what would price it."""

    provider: str
    model: str
    price: ModelPrice | None  # its own, its alias's or the provider's fallback
    usable: bool
    reason: str = ""  # why not, when it is not

    @property
    def pricing(self) -> str:
        if self.price is None:
            return "none"
        return "fallback" if self.price.is_fallback else "own"


def listed_models(user: User, provider: str, listing: Listing) -> list[ListedModel]:
    """The provider's listing for the user, each model with its price, and
    whether the user may call it: an unpriced model only with their own key and
    no budget (budgets.unpriced_refusal)."""
    prices = prices_for(provider, listing.models)
    listed = []
    for model in listing.models:
        refusal = None
        if prices[model] is None:
            refusal = budgets.unpriced_refusal(user, listing.key_source, model)
        listed.append(
            ListedModel(
                provider, model, prices[model], usable=refusal is None, reason=refusal or ""
            )
        )
    return listed


def usage_summary(user: User, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The user's spend between `since` and `until`: totals, by model, by day.

    One grouped query (per model and day: a few hundred rows at most for a
    month) folded here into the three views, instead of three passes over the
    user's calls."""
    groups = (
        UsageRecord.objects.for_user(user)
        .between(since, until)
        .annotate(day=TruncDate("created"))
        .values("provider", "model", "day")
        .annotate(
            requests=Count("id"),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            cached_tokens=Coalesce(Sum("cached_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            reasoning_tokens=Coalesce(Sum("reasoning_tokens"), 0),
            cost=Coalesce(Sum("cost"), ZERO),
            unpriced_calls=Count("id", filter=Q(unpriced=True)),
            estimated_calls=Count("id", filter=Q(estimated=True)),
        )
        .order_by()
    )
    totals = _usage_row()
    by_model: dict[tuple[str, str], dict[str, Any]] = {}
    by_day: dict[Any, dict[str, Any]] = {}
    for group in groups:
        key = (group["provider"], group["model"])
        for row in (
            totals,
            by_model.setdefault(key, _usage_row(provider=key[0], model=key[1])),
            by_day.setdefault(group["day"], _usage_row(day=group["day"])),
        ):
            for name in _USAGE_SUMS:
                row[name] += group[name]  # type: ignore[literal-required]
    models = sorted(by_model.values(), key=lambda r: (-r["cost"], r["provider"], r["model"]))
    days = sorted(by_day.values(), key=lambda r: r["day"])
    return {"totals": totals, "by_model": models, "by_day": days}


_USAGE_SUMS = (
    "requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "unpriced_calls",
    "estimated_calls",
)


def _usage_row(**keys: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(keys)
    for name in _USAGE_SUMS:
        row[name] = Decimal(0) if name == "cost" else 0
    return row
