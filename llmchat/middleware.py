import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from llmchat import health, metrics
from llmchat.api import in_api, status_error
from llmchat.logging import request_id_var

logger = logging.getLogger("llmchat.request")

# An upstream proxy's request id is reused only when it looks like one; anything
# else (too long, odd characters) could be used to forge log lines.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class _SyncAndAsyncMiddleware:
    """Base for middleware that must not push async views onto a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.handle(request, self.get_response)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return await self.ahandle(request, self.get_response)

    def handle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        raise NotImplementedError

    async def ahandle(
        self, request: HttpRequest, get_response: Callable[..., Awaitable]
    ) -> HttpResponse:
        raise NotImplementedError


class ApiErrorMiddleware(_SyncAndAsyncMiddleware):
    """Every error under /api/ is JSON, whatever answered it: an unknown route,
    Django's own 400/403/404 (a bad Host, a body it could not parse), the 500
    page of an uncaught exception (with DEBUG on or off: DEBUG's pages do not go
    through the handlers in llmchat.urls). Just inside the request log, so that
    it sees what all the other middleware answered."""

    def handle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        response = get_response(request)
        return self._as_json(response) if in_api(request) else response

    async def ahandle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        response = await get_response(request)
        return self._as_json(response) if in_api(request) else response

    @staticmethod
    def _as_json(response: HttpResponse) -> HttpResponse:
        content_type = response.get("Content-Type", "").partition(";")[0]
        if response.status_code < 400 or content_type == "application/json":
            return response
        replacement = status_error(response.status_code)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                replacement[header] = value  # Allow, Retry-After, Vary...
        replacement.cookies = response.cookies
        # (Not response.close(): that would end the request, as the server does.)
        return replacement


class RequestLogMiddleware(_SyncAndAsyncMiddleware):
    """Gives each request an id (X-Request-ID) and logs one line when it ends."""

    def _start(self, request: HttpRequest) -> tuple[float, Any]:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.id = rid  # type: ignore[attr-defined]
        return time.monotonic(), request_id_var.set(rid)

    def _finish(
        self,
        request: HttpRequest,
        response: HttpResponse,
        started: float,
        token: Any,
    ) -> HttpResponse:
        response["X-Request-ID"] = request.id  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        duration = time.monotonic() - started
        metrics.observe_request(request.method or "", response.status_code, duration)
        logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 1),
                "user_id": user.pk if user is not None and user.is_authenticated else None,
                "streaming": response.streaming,
            },
        )
        # A reply's generation, started by the view, copied the context with the id
        # in it: its log lines carry the request's id after this returns.
        request_id_var.reset(token)
        return response

    def handle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        started, token = self._start(request)
        return self._finish(request, get_response(request), started, token)

    async def ahandle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        started, token = self._start(request)
        response = await get_response(request)
        return self._finish(request, response, started, token)


class HealthCheckMiddleware(_SyncAndAsyncMiddleware):
    """Answers /health and /metrics before host validation and HTTPS redirects.

    Load balancers, Docker's HEALTHCHECK and Prometheus call them by IP over plain
    HTTP, which ALLOWED_HOSTS and SECURE_SSL_REDIRECT would otherwise turn away.
    /metrics guards itself (METRICS_TOKEN / METRICS_ALLOWED_IPS, see
    llmchat.metrics).
    """

    path = "/health"
    metrics_path = "/metrics"

    def handle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        if request.path == self.path:
            return health.response()
        if request.path == self.metrics_path:
            return metrics.response(request)
        return get_response(request)

    async def ahandle(self, request: HttpRequest, get_response: Callable) -> HttpResponse:
        if request.path == self.path:
            return await health.aresponse()
        if request.path == self.metrics_path:
            # CPU only (no database): fine to run on the event loop.
            return metrics.response(request)
        return await get_response(request)
