"""What the next turn's input will cost, estimated as the user types: the history
sent with the message, the system prompt and the message, counted by the vendor's
own token-counting endpoint where it has one (a free call), else at about four
characters a token (stated as an approximation); priced at the model's input price,
against what is left of the user's budget. An estimate is shown, never recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations import budgets, ledger, turns
from conversations.selectors import conversation_for_user
from pricing.calculator import calculate_cost
from pricing.models import price_for
from providers import registry
from providers.base import ChatMessage, ChatRequest, Credentials, ProviderError, Usage
from providers.keys import KeyProblem, credentials_for

if TYPE_CHECKING:
    from accounts.models import User


@dataclass(frozen=True)
class InputEstimate:
    input_tokens: int
    method: str  # "counted" by the vendor, or "approximate": about four characters a token
    cost: Decimal | None  # None: the model has no price
    budget_left: Decimal | None  # None: no limit applies


COUNT_SECONDS = 3.0
"""How long an estimate waits for the vendor's count before it approximates."""


async def next_turn_input(
    *,
    user: User,
    conversation_id: int | None,
    provider: str,
    model: str,
    message: str,
    system_prompt: str | None,
) -> InputEstimate:
    request, creds = await sync_to_async(_request)(
        user, conversation_id, provider, model, message, system_prompt
    )
    counted = None
    if creds is not None:
        try:
            async with asyncio.timeout(COUNT_SECONDS):
                counted = await registry.get(provider).count_input_tokens(request, creds)
        except (ProviderError, TimeoutError):
            counted = None  # the approximation will do
    tokens = counted if counted is not None else ledger.estimate_tokens(ledger.prompt_of(request))
    cost, left = await sync_to_async(_priced)(user, provider, request.model, tokens, creds)
    return InputEstimate(tokens, "counted" if counted is not None else "approximate", cost, left)


def _request(
    user: User,
    conversation_id: int | None,
    provider: str,
    model: str,
    message: str,
    system_prompt: str | None,
) -> tuple[ChatRequest, Credentials | None]:
    """The request the next turn would make, and the key to count it with (None: none)."""
    turns.check_model(provider, model)
    history: list[ChatMessage] = []
    system = system_prompt or ""
    if conversation_id is not None:
        conversation = conversation_for_user(user, conversation_id)
        history = turns.conversation_history(conversation)
        if system_prompt is None:
            system = conversation.system_prompt
    model = registry.get(provider).canonical_model(model)
    request = ChatRequest(
        model=model, messages=[*history, ChatMessage("user", message)], system=system
    )
    try:
        creds = credentials_for(user=user, provider=provider)
    except KeyProblem:
        creds = None
    return request, creds


def _priced(
    user: User, provider: str, model: str, tokens: int, creds: Credentials | None
) -> tuple[Decimal | None, Decimal | None]:
    price = price_for(provider, model, at=timezone.now())
    cost = calculate_cost(Usage(input_tokens=tokens), price.as_price()) if price else None
    status = budgets.budget_status_if_limited(user)
    key_source = creds.key_source if creds is not None else "none"
    return cost, status.left(key_source) if status is not None else None
