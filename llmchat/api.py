"""What every JSON endpoint shares: errors as {"error": {"code", "message"}},
401 instead of a login redirect, bounded and validated JSON bodies."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth import get_user
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.views import defaults
from django.views.decorators.debug import sensitive_variables

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


JSON_CONTENT_TYPES = ("application/json", "")
"""What a JSON body may be sent as (no Content-Type at all is taken as JSON)."""

MAX_DEPTH = 32
"""How deeply a JSON body may nest: every endpoint reads a flat object."""

MAX_ID = 2**63 - 1
"""The largest id a row can have (a signed 64-bit column)."""

# JSON's \u escapes can spell half of a UTF-16 pair on its own; such a string is
# not Unicode text and no database or UTF-8 encoder will take it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# The body is what the user sent: an API key, a message. Error reports must not
# show it, nor the locals of the JSON decoder this calls.
@sensitive_variables()
def read_json(request: HttpRequest, *, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object of valid text, or ApiError (400 / 413 / 415).
    The one way a JSON view reads its body."""
    # Before the body is touched: once a form body was parsed (the CSRF check
    # reads request.POST), request.body raises.
    if request.content_type not in JSON_CONTENT_TYPES:
        raise ApiError(415, "unsupported_media_type", "Send JSON (application/json).")
    length = request.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    try:
        body = request.body
    except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE, sent without a length
        raise _too_large(max_bytes) from None
    except UnreadablePostError:
        raise ApiError(400, "unreadable_body", "The request body could not be read.") from None
    if not body:
        return {}
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    _check_text(data)
    return data


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "too_large", f"The request body is over {max_bytes} bytes.")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_text(data: dict[str, Any]) -> None:
    """Every string of the body, keys included, is Unicode text, and the body
    nests no deeper than MAX_DEPTH: past this point no field needs either check."""
    for field, value in data.items():
        named = {"field": field} if _is_text(field) else {}
        stack: list[tuple[Any, int]] = [(field, 1), (value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, str) and not _is_text(item):
                raise ApiError(
                    400,
                    "invalid_text",
                    "Text must be valid Unicode: half a surrogate pair on its own is not.",
                    **named,
                )
            if isinstance(item, dict | list) and depth >= MAX_DEPTH:
                raise ApiError(400, "invalid_json", "The request body nests too deeply.")
            if isinstance(item, dict):
                stack.extend((child, depth + 1) for pair in item.items() for child in pair)
            elif isinstance(item, list):
                stack.extend((child, depth + 1) for child in item)


def _is_text(value: str) -> bool:
    return value.isascii() or _LONE_SURROGATE.search(value) is None


def bool_field(data: dict[str, Any], name: str, *, default: bool | None = None) -> bool:
    """A true/false field; `default` when it is left out (None: it may not be)."""
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid", f"'{name}' must be true or false.", field=name)
    return value


def string_field(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, "required", f"'{name}' is required.", field=name)
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"'{name}' must be a string.", field=name)
    return value


def id_field(data: dict[str, Any], name: str) -> int | None:
    """An object's id (1 to MAX_ID) or null. A larger number is no row's id: a 400
    naming the field, not an overflow in the database driver."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ApiError(400, "invalid", f"'{name}' must be an id or null.", field=name)
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

            # The methods the route answers, for the tests that go through every route.
            async_wrapper.api_methods = tuple(methods)  # type: ignore[attr-defined]
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

        wrapper.api_methods = tuple(methods)  # type: ignore[attr-defined]
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


_STATUS_ERRORS = {
    400: ("bad_request", "The request could not be read."),
    401: ("unauthenticated", "Sign in first."),
    403: ("forbidden", "That is not allowed."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "That method is not allowed here."),
    413: ("too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send JSON (application/json)."),
    429: ("rate_limited", "Too many requests. Try again in a little while."),
    500: ("server_error", "Something went wrong on the server. Try again later."),
    503: ("unavailable", "The server is unavailable right now. Try again later."),
}


def status_error(status: int) -> JsonResponse:
    """The JSON error for a status when nothing more is known about it (a page
    that Django or a middleware answered with)."""
    if status in _STATUS_ERRORS:
        code, message = _STATUS_ERRORS[status]
    else:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        code, message = phrase.lower().replace(" ", "_").replace("-", "_"), f"{phrase}."
    return error_response(status, code, message)


# Django's error handlers, JSON under /api/. Django's own pages check the CSRF
# token first, which parses a form body: a malformed one turned a 404 into a 500.


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if in_api(request):
        return status_error(400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if in_api(request):
        return status_error(403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if in_api(request):
        return status_error(404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if in_api(request):
        return status_error(500)
    return defaults.server_error(request)


def in_api(request: HttpRequest) -> bool:
    """Whether the request is the JSON API's, whose every error is JSON."""
    return request.path_info.startswith("/api/")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF failures: JSON for the API, Django's page elsewhere."""
    if in_api(request):
        return error_response(
            403, "csrf_failed", "The CSRF check failed. Reload the page and try again."
        )
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
