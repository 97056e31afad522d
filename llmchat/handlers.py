"""Django's ASGI handler, with each request handled as one sync call.

Django's own ASGI handler builds the middleware stack in async mode. The
middleware that comes with Django (sessions, CSRF, auth, messages, security...)
is `MiddlewareMixin`-based, which in async mode goes to a worker thread and back
for every process_request, process_view and process_response, and a sync view
is one more trip: about twenty trips per request here, each waiting for the
event loop's attention, which under load is what a request waited for most.

Here the stack is built in sync mode, as under WSGI, and the whole request — the
`request_started` signal, the middleware, the view and its queries — is one call
in a worker thread. Only a streamed body (the chat reply, an async generator)
runs on the event loop, where Django's ASGI handler reads it.

Django's handler also starts a thread for each request (the request's
"thread-sensitive" executor, which all its sync calls share) and another to join
it when the request ends; here each request borrows a thread from a small pool
instead and gives it back, with the same one-thread-per-request rule.
docs/performance.md has the numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

logger = logging.getLogger(__name__)

IDLE_THREADS = 64
"""Threads kept for later requests; a burst beyond that gets new ones, which end
after it."""

_thread_names = itertools.count()


class ASGIHandler(DjangoASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # The request's thread-sensitive calls all run on this one thread, as with
        # Django's handler (which starts a new thread for each request).
        thread = self._idle.pop() if self._idle else _new_thread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        except BaseException:
            # Cancelled, or an error escaped: the thread may still be running the
            # request's work. It is not lent again; once that work is done it
            # gives back the request's database connections, and ends.
            thread.submit(close_connections)
            thread.shutdown(wait=False)
            raise
        if len(self._idle) < IDLE_THREADS:
            self._idle.append(thread)
        else:
            thread.shutdown(wait=False)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `ASGIHandler.handle` (6.1), but for `request_started`, which is
        sent from the request's trip to its thread (`_get_response_sync`) instead
        of in a trip of its own (a test fails when Django's changes)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                assert error_response is not None
                await signals.request_started.asend(sender=self.__class__, scope=scope)
                await self.send_response(error_response, send)
                await sync_to_async(error_response.close)()
                return

            class RequestProcessed(Exception):
                pass

            response = None
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self.listen_for_disconnect(receive))
                        response = await self.run_get_response(request)
                        await self.send_response(response, send)
                        raise RequestProcessed
                except* (RequestProcessed, RequestAborted):
                    pass
            except BaseExceptionGroup as exception_group:
                if len(exception_group.exceptions) == 1:
                    raise exception_group.exceptions[0]  # noqa: B904 - as Django does
                raise

            if response is None:
                await signals.request_finished.asend(sender=self.__class__)
            else:
                await sync_to_async(response.close)()

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread, as Django's sync code expects.
        work: asyncio.Future[HttpResponseBase] = asyncio.ensure_future(
            sync_to_async(self._get_response_sync, thread_sensitive=True)(request)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # The client left while the request was being handled; the thread
            # finishes it anyway. Close the response it makes, as Django would
            # have after sending it: a chat turn it started is then released.
            work.add_done_callback(_close_response)
            raise

    def _get_response_sync(self, request: HttpRequest) -> HttpResponseBase:
        scope = getattr(request, "scope", None)
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self.get_response(request)
        if response.streaming:
            # The body is produced later, on the event loop, for as long as the
            # stream lasts; the request's database connection goes back to the
            # pool now rather than when the stream ends (Django's request_finished).
            close_connections()
        return response


def close_connections() -> None:
    """Give this thread's database connections back (to the pool): at the end of a
    request's trip when its body streams, and between a stream's few queries. A
    stream lasts seconds to minutes; holding a connection for all of it capped open
    streams at the pool size and starved other requests."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def _new_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, f"request-{next(_thread_names)}")


def _close_response(work: asyncio.Future[HttpResponseBase]) -> None:
    if work.cancelled() or work.exception() is not None:
        return
    close = sync_to_async(work.result().close, thread_sensitive=False)
    task = asyncio.ensure_future(close())
    _closing.add(task)  # a reference, until it is done
    task.add_done_callback(_closed)


def _closed(task: asyncio.Future[None]) -> None:
    _closing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("closing an abandoned response failed", exc_info=task.exception())


_closing: set[asyncio.Future[None]] = set()
