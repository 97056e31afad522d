"""What every JSON endpoint shares: errors as {"error": {"code", "message"}},
401 instead of a login redirect, bounded and validated JSON bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth import get_user
from django.core.exceptions import ValidationError
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        super().__init__(message)

    def response(self) -> JsonResponse:
        return error_response(self.status, self.code, self.message, **self.extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def validation_error(exc: ValidationError) -> ApiError:
    """A model/service ValidationError as a 400 naming the first problem."""
    if hasattr(exc, "error_dict"):
        field, errors = next(iter(exc.error_dict.items()))
        first = errors[0]
        return ApiError(400, first.code or "invalid", " ".join(first.messages), field=field)
    first = exc.error_list[0]
    return ApiError(400, first.code or "invalid", " ".join(first.messages))


def read_json(request: HttpRequest, *, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError (400 / 413 / 415)."""
    length = request.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, "too_large", f"The request body is over {max_bytes} bytes.")
    body = request.body
    if not body:
        return {}
    if request.content_type not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", "Send JSON (application/json).")
    if len(body) > max_bytes:
        raise ApiError(413, "too_large", f"The request body is over {max_bytes} bytes.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return data


def string_field(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, "required", f"'{name}' is required.", field=name)
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"'{name}' must be a string.", field=name)
    return value


def api_view(methods: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Allowed methods, a signed-in user (401 otherwise), ApiError as JSON.
    Works for sync and async views."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        def check(request: HttpRequest) -> HttpResponse | None:
            if request.method not in methods:
                response = error_response(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
                response["Allow"] = ", ".join(methods)
                return response
            if not request.user.is_authenticated:
                return error_response(401, "unauthenticated", "Sign in first.")
            return None

        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                try:
                    # One trip to a thread for the session and the user (two
                    # queries; auser() would make a trip for each).
                    request.user = await sync_to_async(get_user)(request)
                    refused = check(request)
                    if refused is not None:
                        return refused
                    return await view(request, *args, **kwargs)
                except (ApiError, Http404, OperationalError) as exc:
                    return _error_response(exc)

            return async_wrapper

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                refused = check(request)
                if refused is not None:
                    return refused
                return view(request, *args, **kwargs)
            except (ApiError, Http404, OperationalError) as exc:
                return _error_response(exc)

        return wrapper

    return decorate


def _error_response(exc: ApiError | Http404 | OperationalError) -> JsonResponse:
    """The JSON error for what a view raised; other database errors go on up."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, Http404):
        return _not_found()
    if not _pool_exhausted(exc):
        raise exc
    return _overloaded()


def _pool_exhausted(exc: OperationalError) -> bool:
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # SQLite only
        return False
    return isinstance(exc.__cause__, PoolTimeout)


def _overloaded() -> JsonResponse:
    """Every database connection of this process stayed busy for
    DATABASE_POOL_TIMEOUT: a 503 the client may retry, not a 500."""
    logger.warning("database pool exhausted: request refused with 503")
    response = error_response(
        503, "overloaded", "The server is busy right now. Try again in a few seconds."
    )
    response["Retry-After"] = "5"
    return response


def _not_found() -> JsonResponse:
    return error_response(404, "not_found", "Not found.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF failures: JSON for the API, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(
            403, "csrf_failed", "The CSRF check failed. Reload the page and try again."
        )
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
