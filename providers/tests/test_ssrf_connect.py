"""The SSRF guard at connect time, through the compatible adapter's real SDK."""

from typing import Any

import pytest

from providers import registry, urlsafety
from providers.base import ChatMessage, ChatRequest, Credentials, Failure

pytestmark = pytest.mark.anyio


def chat(model: str = "llama") -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage("user", "hi")])


async def last_event(creds: Credentials) -> Any:
    events = [e async for e in registry.get("compatible").stream(chat(), creds)]
    return events[-1]


async def test_a_name_that_now_resolves_inside_is_refused(
    mock_provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Saved while it pointed outside; DNS now answers with loopback (rebinding).
    monkeypatch.setattr(urlsafety, "resolve", lambda host, port: ["127.0.0.1"])
    event = await last_event(Credentials("sk-x", "http://rebind.example.com:9/v1", "user"))
    assert isinstance(event, Failure)
    assert event.error.code == "unsafe_url"
    assert "127.0.0.1" not in event.error.message
    assert mock_provider.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1:8000/v1",
        "http://0x7f.1/v1",
        "http://2130706433/v1",
        "http://[::ffff:7f00:1]/v1",
        "http://169.254.169.254/v1",
    ],
)
async def test_literal_internal_addresses_are_refused_at_connect(
    url: str, mock_provider: Any
) -> None:
    event = await last_event(Credentials("sk-x", url, "user"))
    assert isinstance(event, Failure)
    assert event.error.code == "unsafe_url"


async def test_a_redirect_to_an_internal_address_is_not_followed(mock_provider: Any) -> None:
    from django.conf import settings

    mock_provider.configure(fault="redirect")
    base = settings.ALLOWED_PRIVATE_BASE_URLS[0] + "/v1"
    event = await last_event(Credentials("sk-x", base, "user"))
    assert isinstance(event, Failure)
    assert len(mock_provider.requests) == 1  # the redirect target was never asked


async def test_the_operators_own_endpoint_is_trusted(mock_provider: Any, settings: Any) -> None:
    # An operator's compatible server on a private network needs no allow-listing.
    settings.ALLOWED_PRIVATE_BASE_URLS = []
    base = settings.OPENAI_BASE_URL  # the mock's /v1 on loopback
    events = [
        e async for e in registry.get("compatible").stream(chat(), Credentials("k", base, "server"))
    ]
    assert not isinstance(events[-1], Failure)
