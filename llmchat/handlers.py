"""Django's ASGI handler, with each request handled as one sync call.

Django's own ASGI handler builds the middleware stack in async mode. The
middleware that comes with Django (sessions, CSRF, auth, messages, security...)
is `MiddlewareMixin`-based, which in async mode goes to a worker thread and back
for every process_request, process_view and process_response, and a sync view
is one more trip: about twenty trips per request here, each waiting for the
event loop's attention, which under load is what a request waited for most.

Here the stack is built in sync mode, as under WSGI, and the whole request — the
middleware, the view and its queries — is one call in a worker thread. Only a
streamed body (the chat reply, an async generator) runs on the event loop,
where Django's ASGI handler reads it. docs/performance.md has the numbers.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger(__name__)


class ASGIHandler(DjangoASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

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
        response = self.get_response(request)
        if response.streaming:
            # The body is produced later, on the event loop, for as long as the
            # stream lasts; the request's database connection goes back to the
            # pool now rather than when the stream ends (Django's request_finished).
            for connection in connections.all(initialized_only=True):
                if not connection.in_atomic_block:
                    connection.close()
        return response


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
