"""llmchat.handlers.ASGIHandler: one thread per request, borrowed from a pool."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import signals
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import path

from llmchat.handlers import ASGIHandler
from llmchat.tests.asgi import http_scope, receive_then_leave

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

seen: dict[str, list[Any]] = {"view": [], "started": [], "db": []}
both_in = threading.Barrier(2, timeout=5)


def where(request: HttpRequest) -> HttpResponse:
    seen["view"].append(threading.current_thread())
    if request.GET.get("wait"):
        both_in.wait()  # returns once another request's view is running too
    if request.GET.get("slow"):
        connections["default"].ensure_connection()
        seen["db"].append(connections["default"])
        time.sleep(0.5)
    return HttpResponse("ok")


async def where_async(request: HttpRequest) -> HttpResponse:
    # An async view under sync middleware; its sync calls go back to the
    # request's own thread.
    seen["view"].append(await sync_to_async(threading.current_thread)())
    return HttpResponse("ok")


urlpatterns = [path("where", where), path("where-async", where_async)]


@pytest.fixture(autouse=True)
def _urls(settings: Any) -> Any:
    settings.ROOT_URLCONF = __name__
    both_in.reset()
    for threads in seen.values():
        threads.clear()

    def started(**kwargs: Any) -> None:
        seen["started"].append(threading.current_thread())

    signals.request_started.connect(started)
    yield
    signals.request_started.disconnect(started)


async def get(handler: ASGIHandler, query: bytes = b"", where: str = "/where") -> int:
    scope = http_scope("GET", where, "")
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


async def test_a_cancelled_request_s_thread_is_not_lent_again_and_gives_its_connection_back() -> (
    None
):
    # Cancelled while its view still runs (a worker shutting down): the thread
    # finishes that work, closes the request's database connection, and ends.
    handler = ASGIHandler()
    request = asyncio.ensure_future(get(handler, b"slow=1"))
    async with asyncio.timeout(5):
        while not seen["db"]:  # noqa: ASYNC110 - the view's thread has no event to wait on
            await asyncio.sleep(0.01)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert handler._idle == []
    (wrapper,) = seen["db"]
    async with asyncio.timeout(5):
        while wrapper.connection is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await get(handler) == 200  # the next request does not wait for that work
    assert seen["view"][-1] is not seen["view"][0]


async def test_an_async_view_runs_its_sync_calls_on_the_request_s_thread() -> None:
    handler = ASGIHandler()
    for _ in range(2):
        assert await get(handler, where="/where-async") == 200
    assert seen["view"] == seen["started"]  # each request's thread, lent twice
    assert seen["view"][0] is seen["view"][1]


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_static_files_are_served_through_the_handler() -> None:
    # whitenoise answers with a file response, a sync iterator read on the loop.
    scope = http_scope("GET", "/static/css/site.css", "")
    done = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await ASGIHandler()(scope, receive_then_leave(b"", done), send)
    assert messages[0]["status"] == 200
    assert b"--accent" in b"".join(m.get("body", b"") for m in messages[1:])


def test_the_copied_handle_is_django_6_1_s() -> None:
    # llmchat.handlers.ASGIHandler.handle is Django's, changed where it sends
    # request_started. When Django's changes (an upgrade), compare the two, carry
    # the change over, and update this hash.
    source = inspect.getsource(DjangoASGIHandler.handle)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == DJANGO_HANDLE_SHA256, digest


DJANGO_HANDLE_SHA256 = "c91f27c7fcdc3fff4f1c7082e91cb30f0bfaa5781ca632a116b1d9e607fd752a"
