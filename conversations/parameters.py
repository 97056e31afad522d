"""The model parameters a user sets for a conversation: temperature, the most
output tokens, and reasoning in each vendor's terms (OpenAI's effort, Anthropic's
and Gemini's thinking budget). Checked against what the provider takes; stored as
a dict of the ones set (Conversation.parameters, Message.parameters)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from pricing.models import ModelPrice
from providers.base import Provider

PARAMETERS = ("temperature", "max_output_tokens", "reasoning_effort", "thinking_budget")
MAX_OUTPUT_CEILING = 200_000
"""The most output tokens anyone may ask for where the price table does not say."""


class InvalidParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = f"parameters.{name}"
        self.message = message


def clean(adapter: Provider, raw: Any, price: ModelPrice | None) -> dict[str, Any]:
    """The parameters as sent, checked for this provider and model; InvalidParameter."""
    if not isinstance(raw, dict):
        raise InvalidParameter("", "'parameters' must be an object.")
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise InvalidParameter(unknown[0], f"Unknown parameter '{unknown[0]}'.")
    found = {name: value for name, value in raw.items() if value is not None and value != ""}
    out: dict[str, Any] = {}
    if "temperature" in found:
        value = found["temperature"]
        top = adapter.max_temperature
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
            raise InvalidParameter(
                "temperature", f"{adapter.label} takes a temperature from 0 to {top:g}."
            )
        out["temperature"] = float(value)
    ceiling = (price.max_output_tokens if price is not None else None) or MAX_OUTPUT_CEILING
    if "max_output_tokens" in found:
        out["max_output_tokens"] = _whole(
            "max_output_tokens", found["max_output_tokens"], 1, ceiling, "Max output tokens"
        )
    if "reasoning_effort" in found:
        efforts = adapter.reasoning_efforts
        if found["reasoning_effort"] not in efforts:
            said = f"one of {', '.join(efforts)}" if efforts else "not taken by this provider"
            raise InvalidParameter("reasoning_effort", f"Reasoning effort: {said}.")
        out["reasoning_effort"] = found["reasoning_effort"]
    if "thinking_budget" in found:
        if adapter.thinking_budgets is None:
            raise InvalidParameter("thinking_budget", f"{adapter.label} takes no thinking budget.")
        least, most = adapter.thinking_budgets
        budget = _whole("thinking_budget", found["thinking_budget"], least, most, "Thinking budget")
        # Anthropic counts thinking within max_tokens (ours, or the default we send).
        limit = out.get("max_output_tokens") or min(settings.DEFAULT_MAX_OUTPUT_TOKENS, ceiling)
        if adapter.name == "anthropic" and budget >= limit:
            raise InvalidParameter(
                "thinking_budget", "The thinking budget must be below the max output tokens."
            )
        out["thinking_budget"] = budget
    return out


def carried(adapter: Provider, saved: dict[str, Any], price: ModelPrice | None) -> dict[str, Any]:
    """A conversation's saved parameters for a turn with this provider: those it
    takes (a conversation that moves from OpenAI to Anthropic drops the effort)."""
    kept = {}
    for name, value in saved.items():
        try:
            kept.update(clean(adapter, {name: value}, price))
        except InvalidParameter:
            continue
    return kept


def _whole(name: str, value: Any, least: int, most: int, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidParameter(name, f"{label}: a whole number from {least:,} to {most:,}.")
    return value
