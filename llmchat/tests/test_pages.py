"""The site layout: navigation, CSP and security headers."""

import re
from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_navigation_for_a_signed_in_user(client: Client, alice: Any) -> None:
    client.force_login(alice)
    html = client.get("/").content.decode()
    for href in ['href="/"', 'href="/usage/"', 'href="/keys/"', 'action="/accounts/logout/"']:
        assert href in html
    assert 'href="/admin/"' not in html


@pytest.mark.django_db
def test_staff_see_the_admin_link(client: Client, staff: Any) -> None:
    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/").content.decode()


@pytest.mark.django_db
def test_every_page_sends_the_content_security_policy(client: Client, alice: Any) -> None:
    client.force_login(alice)
    for url in ["/", "/accounts/profile/", "/accounts/password/change/"]:
        csp = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'", url
        assert directives["img-src"] == "'self' data:"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        # The nonce is added only to pages that use one.
        assert directives["script-src"].split()[0] == "'self'"
        assert "'unsafe-inline'" not in csp


@pytest.mark.django_db
def test_pages_have_no_inline_scripts_without_the_nonce(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/")
    html = response.content.decode()
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or f'nonce="{response.context["csp_nonce"]}"' in tag, tag
    assert " style=" not in html


@pytest.mark.django_db
def test_security_headers(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_static_files_are_served(client: Client) -> None:
    response = client.get("/static/css/site.css")
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_request_is_one_trip_to_a_worker_thread(alice: Any, monkeypatch: Any) -> None:
    # Django's own ASGI handler runs each MiddlewareMixin middleware in async
    # mode, with a trip to a thread for every process_request / process_view /
    # process_response (about twenty a request here); ours runs the stack in one.
    import asyncio

    from asgiref.sync import SyncToAsync, sync_to_async

    from llmchat.handlers import ASGIHandler
    from llmchat.tests.asgi import http_scope, receive_then_leave, session_key

    session = await sync_to_async(session_key)(alice)
    scope = http_scope("GET", "/api/conversations", session)
    messages: list[dict[str, Any]] = []
    done = asyncio.Event()
    receive = receive_then_leave(b"", done)

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    handler = ASGIHandler()
    trips: list[str] = []
    real_call = SyncToAsync.__call__

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await real_call(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    await handler(scope, receive, send)
    assert messages[0]["status"] == 200
    # The request itself (request_started included), and closing the response.
    assert len(trips) == 2, trips
    assert "sync_send" not in " ".join(trips)  # no trip of its own for a signal


@pytest.mark.django_db
@pytest.mark.anyio
async def test_static_files_are_served_under_asgi(async_client: Any) -> None:
    response = await async_client.get("/static/css/site.css")
    assert response.status_code == 200
