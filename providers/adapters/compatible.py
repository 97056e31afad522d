"""Any OpenAI-compatible server (Ollama, vLLM, OpenRouter, Groq, ...), through
Chat Completions with `stream_options.include_usage`.

The user may point it at their own server (a base URL saved with their key), so its
requests go through the SSRF-checking client. Usage: `prompt_tokens` include the
cached ones, `completion_tokens` the reasoning ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.conf import settings

from providers import http
from providers.adapters._util import attr
from providers.adapters.openai import map_openai_error
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


def usage_from_chat(raw: Any) -> Usage:
    return Usage.normalized(
        input_tokens=attr(raw, "prompt_tokens"),
        cached_tokens=attr(raw, "prompt_tokens_details", "cached_tokens"),
        output_tokens=attr(raw, "completion_tokens"),
        reasoning_tokens=attr(raw, "completion_tokens_details", "reasoning_tokens"),
    )


_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "max_tokens",
    "content_filter": "content_filter",
}


class CompatibleProvider(Provider):
    name = "compatible"
    label = "OpenAI-compatible"
    user_base_url = True

    def server_credentials(self) -> Credentials | None:
        # The operator's own OpenAI-compatible endpoint, if any (trusted).
        base = settings.COMPATIBLE_BASE_URL
        return Credentials(settings.COMPATIBLE_API_KEY, base, "server") if base else None

    def map_error(self, exc: BaseException) -> ProviderError | None:
        return map_openai_error(exc)

    def _client(self, creds: Credentials) -> Any:
        # Only a user's URL needs the connect-time check; the operator's is trusted.
        return http.openai_client(creds, user_base_url=creds.key_source == "user")

    async def _check_key(self, creds: Credentials) -> None:
        await self._client(creds).models.list()

    async def _list_models(self, creds: Credentials) -> list[str]:
        return [m.id async for m in self._client(creds).models.list()]

    async def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        params: dict[str, Any] = {
            "model": request.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_output_tokens:
            params["max_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        # The history is plain JSON already: sent as extra_body (which replaces the
        # empty list) it skips the SDK's per-message transform.
        call = self._client(creds).chat.completions.with_streaming_response.create(
            messages=[], **params, extra_body={"messages": messages}
        )
        async with call as response:
            # Read on to the end, past [DONE]: the connection is then reused.
            async for event in sse_events(response, _chat_event):
                yield event


def _chat_event(sse: ServerEvent) -> Iterator[Event]:
    """One chunk of a Chat Completions stream, as ours."""
    if sse.data.startswith("[DONE]"):
        return
    chunk = sse.json()
    if not isinstance(chunk, dict):
        return
    if chunk.get("error"):
        raise ProviderError("unavailable")
    if chunk.get("usage") is not None:
        yield UsageReport(usage_from_chat(chunk["usage"]))
    for choice in chunk.get("choices") or []:
        text = attr(choice, "delta", "content")
        if text:
            yield TextDelta(str(text))
        reason = attr(choice, "finish_reason")
        if reason:
            yield Finish(_FINISH.get(reason, "other"), raw=str(reason))
