"""SDK clients are reused per event loop, key and base URL."""

from typing import Any

import pytest

from providers import clients
from providers.base import Credentials

pytestmark = pytest.mark.anyio


async def test_the_same_key_and_url_reuse_one_client_others_get_their_own() -> None:
    a = Credentials("sk-test-aaaaaaaaaaaaaaaaaaaa", "http://127.0.0.1:9/v1")
    b = Credentials("sk-test-bbbbbbbbbbbbbbbbbbbb", "http://127.0.0.1:9/v1")
    first = clients.openai_client(a)
    assert clients.openai_client(a) is first
    assert clients.openai_client(b) is not first
    assert clients.openai_client(a, user_base_url=True) is not first
    assert clients.anthropic_client(a) is not first


async def test_a_changed_timeout_setting_makes_a_new_client(settings: Any) -> None:
    creds = Credentials("sk-test-cccccccccccccccccccc", "http://127.0.0.1:9/v1")
    first = clients.openai_client(creds)
    settings.PROVIDER_IDLE_TIMEOUT = 123
    assert clients.openai_client(creds) is not first


async def test_the_cache_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(clients, "_CLIENTS_PER_LOOP", 3)
    made = [
        clients.openai_client(Credentials(f"sk-test-{n:020d}", "http://127.0.0.1:9/v1"))
        for n in range(5)
    ]
    again = clients.openai_client(Credentials(f"sk-test-{0:020d}", "http://127.0.0.1:9/v1"))
    assert again is not made[0]  # pushed out by newer ones
    assert (
        clients.openai_client(Credentials(f"sk-test-{4:020d}", "http://127.0.0.1:9/v1")) is made[4]
    )


async def test_clients_keep_no_cookies_between_calls() -> None:
    import httpx2

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"Set-Cookie": "__cf_bm=abc; Path=/"}, json={})

    client = clients.http_client()
    client._transport = httpx2.MockTransport(answer)
    await client.get("https://api.example.com/v1/models")
    assert not client.cookies
