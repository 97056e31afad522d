"""The JSON shapes of the chat API (docs/api.md): conversations, messages, money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from conversations.models import Conversation, Message, Preset
from pricing.calculator import MICRO_DOLLAR


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
        "parameters": m.parameters,
        "created_at": m.created.isoformat(),
    }


def conversation_json(c: Conversation, total: Decimal, unpriced: int) -> dict[str, Any]:
    return {
        "id": c.pk,
        "title": c.title,
        "provider": c.provider,
        "model": c.model,
        "updated_at": c.updated.isoformat(),
        "pinned": c.pinned,
        "archived": c.archived,
        "total_cost": money(total),
        "unpriced_calls": unpriced,
    }


def preset_json(p: Preset) -> dict[str, Any]:
    return {
        "id": p.pk,
        "name": p.name,
        "provider": p.provider,
        "model": p.model,
        "system_prompt": p.system_prompt,
        "parameters": p.parameters,
        "default": p.is_default,
    }


def conversation_detail_json(
    c: Conversation, total: Decimal, unpriced: int, messages: list[Message]
) -> dict[str, Any]:
    return {
        **conversation_json(c, total, unpriced),
        "system_prompt": c.system_prompt,
        "parameters": c.parameters,
        "messages": [message_json(m) for m in messages],
    }
