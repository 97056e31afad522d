"""llmchat.handlers.ASGIHandler: one thread per request, borrowed from a pool."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.core import signals
from django.http import HttpRequest, HttpResponse
from django.urls import path

from llmchat.handlers import ASGIHandler
from llmchat.tests.asgi import http_scope, receive_then_leave

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

seen: dict[str, list[threading.Thread]] = {"view": [], "started": []}
both_in = threading.Barrier(2, timeout=5)


def where(request: HttpRequest) -> HttpResponse:
    seen["view"].append(threading.current_thread())
    if request.GET.get("wait"):
        both_in.wait()  # returns once another request's view is running too
    return HttpResponse("ok")


urlpatterns = [path("where", where)]


@pytest.fixture(autouse=True)
def _urls(settings: Any) -> Any:
    settings.ROOT_URLCONF = __name__
    for threads in seen.values():
        threads.clear()

    def started(**kwargs: Any) -> None:
        seen["started"].append(threading.current_thread())

    signals.request_started.connect(started)
    yield
    signals.request_started.disconnect(started)


async def get(handler: ASGIHandler, query: bytes = b"") -> int:
    scope = http_scope("GET", "/where", "")
    scope["query_string"] = query
    done = asyncio.Event()
    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await handler(scope, receive_then_leave(b"", done), send)
    return statuses[0]


async def test_request_started_is_sent_from_the_request_s_own_thread() -> None:
    handler = ASGIHandler()
    assert await get(handler) == 200
    assert seen["started"] == seen["view"]


async def test_requests_one_after_another_reuse_a_thread() -> None:
    # Django's handler starts a thread per request (and one more to join it).
    handler = ASGIHandler()
    for _ in range(3):
        assert await get(handler) == 200
    first, *rest = seen["view"]
    assert all(thread is first for thread in rest)
    assert first.is_alive()


async def test_requests_at_the_same_time_each_have_a_thread() -> None:
    # Each view waits for the other one to be running: on a shared thread they
    # would wait for ever (the barrier's timeout would fail them).
    handler = ASGIHandler()
    statuses = await asyncio.gather(get(handler, b"wait=1"), get(handler, b"wait=1"))
    assert statuses == [200, 200]
    assert seen["view"][0] is not seen["view"][1]


async def test_a_burst_beyond_the_pool_s_size_gives_the_extra_threads_back(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr("llmchat.handlers.IDLE_THREADS", 1)
    handler = ASGIHandler()
    assert await asyncio.gather(get(handler, b"wait=1"), get(handler, b"wait=1")) == [200, 200]
    assert len(handler._idle) == 1  # the second thread was shut down, not kept
