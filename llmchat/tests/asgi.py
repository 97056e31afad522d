"""Calling the ASGI application directly, as uvicorn would, with a signed-in user:
for tests that need to choose exactly when the client leaves or what a request
costs, which neither the test client nor a live server lets them do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from django.test import Client

CSRF = "c" * 32  # sent as both the cookie and the header, as a browser would


def session_key(user: Any) -> str:
    """A session in which `user` is signed in (sync: wrap in sync_to_async)."""
    client = Client()
    client.force_login(user)
    return str(client.cookies["sessionid"].value)


def http_scope(method: str, path: str, session: str, *, json_body: bool = False) -> dict[str, Any]:
    """The ASGI scope of a request from a signed-in browser (with its CSRF token)."""
    headers = [
        (b"host", b"testserver"),
        (b"cookie", f"sessionid={session}; csrftoken={CSRF}".encode()),
        (b"x-csrftoken", CSRF.encode()),
    ]
    if json_body:
        headers.append((b"content-type", b"application/json"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


def receive_then_leave(
    body: bytes, leave: asyncio.Event
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI `receive`: the request's body once, then `http.disconnect` once
    `leave` is set (a client that stays until then)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    return receive
