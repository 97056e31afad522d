"""What the next turn's input will cost, estimated as the user types: the history
sent with the message, the system prompt and the message, counted at about four
characters a token (stated as an approximation), priced at the model's input price,
against what is left of the user's budget. An estimate is shown, never recorded."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.utils import timezone

from conversations import budgets, ledger, turns
from conversations.selectors import conversation_for_user
from pricing.calculator import calculate_cost
from pricing.models import price_for
from providers import registry
from providers.base import ChatMessage, ChatRequest, Usage
from providers.keys import KeyProblem, credentials_for

if TYPE_CHECKING:
    from accounts.models import User


@dataclass(frozen=True)
class InputEstimate:
    input_tokens: int
    method: str  # "approximate": about four characters a token
    cost: Decimal | None  # None: the model has no price
    budget_left: Decimal | None  # None: no limit applies


def next_turn_input(
    *,
    user: User,
    conversation_id: int | None,
    provider: str,
    model: str,
    message: str,
    system_prompt: str | None,
) -> InputEstimate:
    turns.check_model(provider, model)
    history: list[ChatMessage] = []
    system = system_prompt or ""
    if conversation_id is not None:
        conversation = conversation_for_user(user, conversation_id)
        history = turns.conversation_history(conversation)
        if system_prompt is None:
            system = conversation.system_prompt
    request = ChatRequest(
        model=model, messages=[*history, ChatMessage("user", message)], system=system
    )
    tokens = ledger.estimate_tokens(ledger.prompt_of(request))
    adapter = registry.get(provider)
    price = price_for(provider, adapter.canonical_model(model), at=timezone.now())
    cost = calculate_cost(Usage(input_tokens=tokens), price.as_price()) if price else None
    return InputEstimate(tokens, "approximate", cost, _budget_left(user, provider))


def _budget_left(user: User, provider: str) -> Decimal | None:
    status = budgets.budget_status_if_limited(user)
    if status is None:
        return None
    left = []
    if status.limit is not None:
        left.append(status.limit - status.spent)
    try:
        on_server = credentials_for(user=user, provider=provider).key_source == "server"
    except KeyProblem:
        on_server = False
    if on_server and status.server_limit is not None:
        left.append(status.server_limit - status.server_spent)
    return max(min(left), Decimal(0)) if left else None
