"""Anthropic, through the Messages API.

Usage convention: `input_tokens` EXCLUDE the tokens read from cache
(`cache_read_input_tokens`) and written to it (`cache_creation_input_tokens`), so
the billed input is their sum. The `usage` in `message_delta` is cumulative (the
totals so far, not an increment). Thinking tokens are inside `output_tokens` (the
billed total); `output_tokens_details.thinking_tokens` says how many of them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.conf import settings

from providers import http
from providers.adapters._util import attr, retry_after
from providers.base import (
    ChatRequest,
    Credentials,
    Event,
    Finish,
    FinishReason,
    Provider,
    ProviderError,
    TextDelta,
    Usage,
    UsageReport,
    token_count,
)
from providers.sse import ServerEvent
from providers.sse import events as sse_events


def usage_from_anthropic(raw: Any) -> Usage:
    read = token_count(attr(raw, "cache_read_input_tokens"))
    write = token_count(attr(raw, "cache_creation_input_tokens"))
    return Usage.normalized(
        input_tokens=token_count(attr(raw, "input_tokens")) + read + write,
        cached_tokens=read,
        cache_write_tokens=write,
        output_tokens=attr(raw, "output_tokens"),
        reasoning_tokens=attr(raw, "output_tokens_details", "thinking_tokens"),
    )


_BY_TYPE = {
    "authentication_error": "invalid_key",
    "permission_error": "permission_denied",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "unavailable",
    "timeout_error": "timeout",
    "request_too_large": "context_too_long",
    "not_found_error": "bad_request",
}

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "max_tokens",
    "refusal": "content_filter",
}


def map_anthropic_error(exc: BaseException) -> ProviderError | None:
    import anthropic  # lazily: see map_openai_error

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError("timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError("unavailable")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = attr(exc.body, "error", "type") or attr(exc.body, "type")
        message = str(attr(exc.body, "error", "message") or "")
        if kind == "invalid_request_error":
            if "prompt is too long" in message:
                return ProviderError("context_too_long", status=status)
            if "credit balance" in message:
                return ProviderError("insufficient_quota", status=status)
            return ProviderError("bad_request", status=status)
        code = "overloaded" if status in (503, 529) else _BY_TYPE.get(kind or "")
        if code is None:
            if status == 401:
                code = "invalid_key"
            elif status == 429:
                code = "rate_limited"
            elif status in (503, 529):
                code = "overloaded"
            elif status >= 500:
                code = "unavailable"
            else:
                code = "bad_request"
        after = retry_after(exc.response.headers) if code == "rate_limited" else None
        return ProviderError(code, retry_after=after, status=status)  # type: ignore[arg-type]
    if isinstance(exc, anthropic.APIError):
        return ProviderError("unavailable")
    return None


class AnthropicProvider(Provider):
    name = "anthropic"
    label = "Anthropic"
    key_pattern = re.compile(r"sk-ant-[A-Za-z0-9_-]{16,}")
    key_shape = "start with sk-ant-"
    max_temperature = 1.0
    thinking_budgets = (1024, 64000)
    base_url_setting = "ANTHROPIC_BASE_URL"
    api_key_setting = "ANTHROPIC_API_KEY"

    def map_error(self, exc: BaseException) -> ProviderError | None:
        return map_anthropic_error(exc)

    async def _check_key(self, creds: Credentials) -> None:
        await http.anthropic_client(creds).models.list(limit=1)

    async def _list_models(self, creds: Credentials) -> list[str]:
        return [m.id async for m in http.anthropic_client(creds).models.list(limit=1000)]

    async def _count_input_tokens(self, request: ChatRequest, creds: Credentials) -> int | None:
        params: dict[str, Any] = {"model": request.model}
        if request.system:
            params["system"] = request.system
        history: Any = [{"role": m.role, "content": m.content} for m in request.messages]
        counted = await http.anthropic_client(creds).messages.count_tokens(
            messages=history, **params
        )
        return int(counted.input_tokens)

    async def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        params: dict[str, Any] = {
            "model": request.model,
            # Required by Anthropic.
            "max_tokens": request.max_output_tokens or settings.DEFAULT_MAX_OUTPUT_TOKENS,
            "stream": True,
        }
        if request.system:
            params["system"] = request.system
        # The history is plain JSON already: sent as extra_body (which replaces the
        # empty list) it skips the SDK's per-message transform. So does temperature,
        # which the 1.x+ SDK takes only as an extra body field.
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages]
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.thinking_budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
        call = http.anthropic_client(creds).messages.with_streaming_response.create(
            messages=[], **params, extra_body=body
        )
        totals: dict[str, Any] = {}
        stop = ""

        def mapped(sse: ServerEvent) -> Iterator[Event]:
            nonlocal stop
            data = sse.json()
            kind = attr(data, "type") or sse.event  # the event name, as the SDK does
            if sse.event == "error" or kind == "error":
                raise _stream_error(data)
            if kind == "message_start":
                totals.update(_counts(attr(data, "message", "usage")))
            elif kind == "content_block_delta":
                if attr(data, "delta", "type") == "text_delta":
                    yield TextDelta(str(attr(data, "delta", "text") or ""))
            elif kind == "message_delta":
                # Cumulative: replace, never add.
                totals.update(_counts(attr(data, "usage")))
                stop = attr(data, "delta", "stop_reason") or stop

        try:
            async with call as response:
                async for event in sse_events(response, mapped):
                    yield event
        except Exception:
            # The input (and any output) the provider counted before failing.
            if totals:
                yield UsageReport(usage_from_anthropic(totals))
            raise
        if totals:
            yield UsageReport(usage_from_anthropic(totals))
        yield Finish(_STOP.get(stop, "other"), raw=stop)


def _stream_error(data: Any) -> ProviderError:
    """An `error` event inside a stream that had started (HTTP 200)."""
    kind = attr(data, "error", "type") or ""
    if kind == "invalid_request_error":
        message = str(attr(data, "error", "message") or "")
        if "prompt is too long" in message:
            return ProviderError("context_too_long")
        if "credit balance" in message:
            return ProviderError("insufficient_quota")
        return ProviderError("bad_request")
    return ProviderError(_BY_TYPE.get(kind, "unavailable"))  # type: ignore[arg-type]


def _counts(raw: Any) -> dict[str, Any]:
    names = (
        "input_tokens",
        "output_tokens",
        "output_tokens_details",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )
    return {n: attr(raw, n) for n in names if attr(raw, n) is not None}
