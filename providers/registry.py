"""The provider registry: every adapter, by the name used in the API, URLs and ledger."""

from __future__ import annotations

from django.conf import settings

from providers.adapters.anthropic import AnthropicProvider
from providers.adapters.compatible import CompatibleProvider
from providers.adapters.demo import DemoProvider
from providers.adapters.google import GoogleProvider
from providers.adapters.openai import OpenAIProvider
from providers.base import Provider

_ALL: dict[str, Provider] = {
    p.name: p
    for p in (
        OpenAIProvider(),
        AnthropicProvider(),
        GoogleProvider(),
        CompatibleProvider(),
        DemoProvider(),
    )
}

PROVIDER_NAMES: tuple[str, ...] = tuple(_ALL)


class UnknownProvider(LookupError):
    pass


def enabled() -> dict[str, Provider]:
    """The providers this site offers (the demo can be turned off)."""
    return {name: p for name, p in _ALL.items() if name != "demo" or settings.DEMO_PROVIDER}


def get(name: str) -> Provider:
    try:
        return enabled()[name]
    except KeyError:
        raise UnknownProvider(name) from None


def key_providers() -> dict[str, Provider]:
    """Providers a user can save a key for."""
    return {name: p for name, p in enabled().items() if p.needs_key}


def preload_sdks() -> None:
    """Import the vendor SDKs now. They are imported lazily (each takes up to a
    second), so that management commands start fast; a server calls this at start
    so that its first chat does not pay for it."""
    import anthropic  # noqa: F401
    import openai  # noqa: F401
    from google.genai import errors, types  # noqa: F401
