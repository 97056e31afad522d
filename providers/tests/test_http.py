"""The HTTP and SDK clients: reused per event loop, key and base URL; aiohttp
sessions that keep nothing between calls and end with their loop."""

from typing import Any

import pytest

from providers import http
from providers.base import Credentials


@pytest.mark.anyio
async def test_the_same_key_and_url_reuse_one_client_others_get_their_own() -> None:
    a = Credentials("sk-test-aaaaaaaaaaaaaaaaaaaa", "http://127.0.0.1:9/v1")
    b = Credentials("sk-test-bbbbbbbbbbbbbbbbbbbb", "http://127.0.0.1:9/v1")
    first = http.openai_client(a)
    assert http.openai_client(a) is first
    assert http.openai_client(b) is not first
    assert http.openai_client(a, user_base_url=True) is not first
    assert http.anthropic_client(a) is not first


@pytest.mark.anyio
async def test_a_changed_timeout_setting_makes_a_new_client(settings: Any) -> None:
    creds = Credentials("sk-test-cccccccccccccccccccc", "http://127.0.0.1:9/v1")
    first = http.openai_client(creds)
    settings.PROVIDER_IDLE_TIMEOUT = 123
    assert http.openai_client(creds) is not first


@pytest.mark.anyio
async def test_the_cache_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(http, "_CLIENTS_PER_LOOP", 3)
    made = [
        http.openai_client(Credentials(f"sk-test-{n:020d}", "http://127.0.0.1:9/v1"))
        for n in range(5)
    ]
    again = http.openai_client(Credentials(f"sk-test-{0:020d}", "http://127.0.0.1:9/v1"))
    assert again is not made[0]  # pushed out by newer ones
    assert http.openai_client(Credentials(f"sk-test-{4:020d}", "http://127.0.0.1:9/v1")) is made[4]


@pytest.mark.anyio
async def test_clients_keep_no_cookies_between_calls() -> None:
    import httpx2

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"Set-Cookie": "__cf_bm=abc; Path=/"}, json={})

    client = http.http_client()
    client._transport = httpx2.MockTransport(answer)
    await client.get("https://api.example.com/v1/models")
    assert not client.cookies


@pytest.mark.anyio
async def test_a_provider_cannot_set_a_cookie_for_the_next_call() -> None:
    # One session serves every call (with the server's key, every user's): a
    # cookie one answer sets must not go with the next request.
    import asyncio

    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        seen.append(next((h for h in head.split("\r\n") if h.startswith("cookie:")), ""))
        writer.write(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: session=alice; Path=/\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for _ in range(2):
            response = await http.http_client().get(f"http://127.0.0.1:{port}/v1/models")
            assert response.status_code == 200
    assert seen == ["", ""]
    await http.aclose_all()


def test_the_sessions_of_a_loop_that_closed_are_closed_and_dropped() -> None:
    import asyncio

    async def open_one() -> Any:
        http.http_client()
        loop = asyncio.get_running_loop()
        return loop, http._transports[loop]["operator"]

    loop, transport = asyncio.run(open_one())
    assert not transport.client.closed

    async def later() -> None:
        http.http_client()
        await asyncio.sleep(0)  # the old session's close runs
        await asyncio.sleep(0)

    asyncio.run(later())
    assert loop not in http._transports
    assert transport.client.closed
    asyncio.run(http.aclose_all())
