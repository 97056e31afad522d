"""OpenAI, through the Responses API (store=False: the full history goes each turn).

Usage convention: `input_tokens` include the cached ones
(`input_tokens_details.cached_tokens`), `output_tokens` include the reasoning ones
(`output_tokens_details.reasoning_tokens`) — already our normalized form.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

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
)
from providers.sse import ServerEvent
from providers.sse import events as sse_events
from providers.urlsafety import UnsafeURLError


def usage_from_responses(raw: Any) -> Usage:
    return Usage.normalized(
        input_tokens=attr(raw, "input_tokens"),
        cached_tokens=attr(raw, "input_tokens_details", "cached_tokens"),
        output_tokens=attr(raw, "output_tokens"),
        reasoning_tokens=attr(raw, "output_tokens_details", "reasoning_tokens"),
    )


# OpenAI lists every model of the account: these families do not chat.
_NOT_CHAT = re.compile(
    r"embedding|whisper|tts|dall-e|davinci|babbage|moderation|image|transcribe|"
    r"realtime|audio|search|computer-use|codex-mini|sora|ft:"
)


def map_openai_error(exc: BaseException) -> ProviderError | None:
    """OpenAI's exceptions (and those of OpenAI-compatible servers) as ProviderError."""
    # Imported here, not at the top: the SDKs take a second or more to import, and
    # every process (management commands included) imports the provider registry.
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timeout")
    if isinstance(exc, openai.APIConnectionError):
        if _refused_as_unsafe(exc):
            return ProviderError("unsafe_url")
        return ProviderError("unavailable")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = attr(exc.body, "code") or attr(exc.body, "error", "code")
        kind = attr(exc.body, "type") or attr(exc.body, "error", "type")
        if status == 401:
            return ProviderError("invalid_key", status=status)
        if status == 403:
            return ProviderError("permission_denied", status=status)
        if status == 429:
            if "insufficient_quota" in (code, kind):
                return ProviderError("insufficient_quota", status=status)
            return ProviderError(
                "rate_limited", retry_after=retry_after(exc.response.headers), status=status
            )
        if code == "context_length_exceeded":
            return ProviderError("context_too_long", status=status)
        if 300 <= status < 400:
            # A redirect is never followed (it could point anywhere).
            return ProviderError(
                "bad_request",
                "The server answered with a redirect, which is not followed. Check the base URL.",
                status=status,
            )
        if status in (503, 529):
            return ProviderError("overloaded", status=status)
        if status >= 500:
            return ProviderError("unavailable", status=status)
        if status == 404:
            return ProviderError(
                "bad_request", "The provider does not know this model.", status=404
            )
        return ProviderError("bad_request", status=status)
    if isinstance(exc, openai.APIError):
        # An error inside a stream that had started (no HTTP status).
        return ProviderError("unavailable")
    return None


def _refused_as_unsafe(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UnsafeURLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_INCOMPLETE: dict[str, FinishReason] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "content_filter",
}


class OpenAIProvider(Provider):
    name = "openai"
    label = "OpenAI"
    key_pattern = re.compile(r"sk-(?!ant-)[A-Za-z0-9_-]{16,}")
    key_shape = "start with sk-"
    reasoning_efforts = ("minimal", "low", "medium", "high")
    base_url_setting = "OPENAI_BASE_URL"
    api_key_setting = "OPENAI_API_KEY"

    def map_error(self, exc: BaseException) -> ProviderError | None:
        return map_openai_error(exc)

    async def _check_key(self, creds: Credentials) -> None:
        await http.openai_client(creds).models.list()

    async def _list_models(self, creds: Credentials) -> list[str]:
        listed = [m.id async for m in http.openai_client(creds).models.list()]
        return [m for m in listed if not _NOT_CHAT.search(m)]

    async def _count_input_tokens(self, request: ChatRequest, creds: Credentials) -> int | None:
        counted = await http.openai_client(creds).responses.input_tokens.count(
            model=request.model,
            instructions=request.system or None,
            input=[{"role": m.role, "content": m.content} for m in request.messages],
        )
        return int(counted.input_tokens)

    async def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        params: dict[str, Any] = {"model": request.model, "store": False, "stream": True}
        if request.system:
            params["instructions"] = request.system
        if request.max_output_tokens:
            params["max_output_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.reasoning_effort:
            params["reasoning"] = {"effort": request.reasoning_effort}
        # The history goes as extra_body: already plain JSON, it needs none of the
        # SDK's per-item transform (a walk over its type hints for every message).
        body = {"input": [{"role": m.role, "content": m.content} for m in request.messages]}
        call = http.openai_client(creds).responses.with_streaming_response.create(
            **params, extra_body=body
        )
        async with call as response:
            async for event in sse_events(response, _responses_event):
                yield event


def _responses_event(sse: ServerEvent) -> Iterator[Event]:
    """One event of a Responses API stream, as ours."""
    if sse.data.startswith("[DONE]"):  # some proxies end with it
        return
    data = sse.json()
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "response.output_text.delta":
        yield TextDelta(str(data.get("delta") or ""))
    elif kind in ("response.completed", "response.incomplete"):
        result = data.get("response")
        if attr(result, "usage") is not None:
            yield UsageReport(usage_from_responses(result["usage"]))
        reason = attr(result, "incomplete_details", "reason")
        yield Finish(_INCOMPLETE.get(reason or "", "stop"), raw=reason or "")
    elif kind == "response.failed":
        result = data.get("response")
        if attr(result, "usage") is not None:
            yield UsageReport(usage_from_responses(result["usage"]))
        code = attr(result, "error", "code")
        raise ProviderError("overloaded" if code == "server_is_overloaded" else "unavailable")
    elif kind == "error" or (isinstance(data, dict) and data.get("error")):
        code = attr(data, "code") or attr(data, "error", "code")
        raise ProviderError("rate_limited" if code == "rate_limit_exceeded" else "unavailable")
