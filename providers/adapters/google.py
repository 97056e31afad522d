"""Google Gemini, through google-genai (generateContent, streamed as SSE).

Usage convention: `promptTokenCount` INCLUDES `cachedContentTokenCount`;
`thoughtsTokenCount` is billed as output but is NOT inside `candidatesTokenCount`,
so the billed output is their sum. Every streamed chunk carries the usage so far;
the last one counts.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from providers import http
from providers.adapters._util import attr

if TYPE_CHECKING:
    from google.genai import errors

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


def usage_from_gemini(raw: Any) -> Usage:
    thoughts = token_count(attr(raw, "thoughts_token_count") or attr(raw, "thoughtsTokenCount"))
    candidates = token_count(
        attr(raw, "candidates_token_count") or attr(raw, "candidatesTokenCount")
    )
    return Usage.normalized(
        input_tokens=attr(raw, "prompt_token_count") or attr(raw, "promptTokenCount"),
        cached_tokens=attr(raw, "cached_content_token_count")
        or attr(raw, "cachedContentTokenCount"),
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
    )


_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    found = attr(exc.details, "error", "details") or attr(exc.details, "details") or []
    return [d for d in found if isinstance(d, dict)]


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        delay = detail.get("retryDelay")
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(delay or ""))
        if match:
            return float(match.group(1))
    return None


def map_google_error(exc: BaseException) -> ProviderError | None:
    from google.genai import errors  # lazily: see map_openai_error

    if isinstance(exc, errors.APIError):
        code = int(exc.code or 0)
        details = _details(exc)
        reasons = {d.get("reason") for d in details}
        message = str(exc.message or "")
        # A bad Gemini key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
        if "API_KEY_INVALID" in reasons or code == 401:
            return ProviderError("invalid_key", status=code)
        if code == 403:
            return ProviderError("permission_denied", status=code)
        if code == 429:
            quota_ids = " ".join(
                str(v.get("quotaId", "")) for d in details for v in d.get("violations", [])
            )
            if "PerDay" in quota_ids:
                return ProviderError("insufficient_quota", status=code)
            return ProviderError("rate_limited", retry_after=_retry_delay(details), status=code)
        if code == 400 and "token count" in message and "exceeds" in message:
            return ProviderError("context_too_long", status=code)
        if code == 503:
            return ProviderError("overloaded", status=code)
        if code == 504:
            return ProviderError("timeout", status=code)
        if code >= 500:
            return ProviderError("unavailable", status=code)
        if code == 404:
            return ProviderError(
                "bad_request", "The provider does not know this model.", status=404
            )
        return ProviderError("bad_request", status=code)
    return None


class GoogleProvider(Provider):
    name = "google"
    label = "Google Gemini"
    key_pattern = re.compile(r"AIza[A-Za-z0-9_-]{20,}")
    key_shape = "start with AIza"
    thinking_budgets = (0, 32768)
    base_url_setting = "GEMINI_BASE_URL"
    api_key_setting = "GEMINI_API_KEY"

    def map_error(self, exc: BaseException) -> ProviderError | None:
        return map_google_error(exc)

    def canonical_model(self, model: str) -> str:
        # The API (and google-genai) takes "models/gemini-2.5-pro" for "gemini-2.5-pro".
        return model.removeprefix("models/")

    async def _check_key(self, creds: Credentials) -> None:
        pager = await http.google_client(creds).aio.models.list(config={"page_size": 1})
        async for _ in pager:
            break

    async def _list_models(self, creds: Credentials) -> list[str]:
        pager = await http.google_client(creds).aio.models.list(config={"page_size": 1000})
        return [
            (m.name or "").removeprefix("models/")
            async for m in pager
            if m.name and "generateContent" in (m.supported_actions or [])
        ]

    async def _count_input_tokens(self, request: ChatRequest, creds: Credentials) -> int | None:
        from google.genai import types

        # The Developer API counts contents only (no system instruction): the system
        # prompt is counted as a first turn of its own.
        turns = ([("user", request.system)] if request.system else []) + [
            ("model" if m.role == "assistant" else "user", m.content) for m in request.messages
        ]
        contents = [types.Content(role=role, parts=[types.Part(text=text)]) for role, text in turns]
        recorder = http.ResponseRecorder()
        try:
            counted = await http.google_client(creds, recorder=recorder).aio.models.count_tokens(
                model=request.model, contents=contents
            )
        finally:
            await recorder.aclose()
        return int(counted.total_tokens or 0)

    async def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        from google.genai import types

        contents = [
            types.Content(
                role="model" if m.role == "assistant" else "user",
                parts=[types.Part(text=m.content)],
            )
            for m in request.messages
        ]
        config = types.GenerateContentConfig(
            system_instruction=request.system or None,
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
            thinking_config=(
                types.ThinkingConfig(thinking_budget=request.thinking_budget)
                if request.thinking_budget is not None
                else None
            ),
            # One call is one request: no automatic function calling or continuation
            # hops (each would be billed), and a plain stream that closes cleanly.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            automatic_continuation=False,
        )
        recorder = http.ResponseRecorder()
        client = http.google_client(creds, recorder=recorder)
        last_usage: Any = None
        finish = ""
        try:
            stream = await client.aio.models.generate_content_stream(
                model=request.model, contents=contents, config=config
            )
            async for chunk in stream:
                if chunk.usage_metadata is not None:
                    last_usage = chunk.usage_metadata
                blocked = attr(chunk, "prompt_feedback", "block_reason")
                if blocked:
                    finish = "SAFETY"
                for candidate in chunk.candidates or []:
                    for part in attr(candidate, "content", "parts") or []:
                        # Thought summaries are not part of the reply.
                        if part.text and not part.thought:
                            yield TextDelta(part.text)
                    if candidate.finish_reason:
                        finish = str(
                            getattr(candidate.finish_reason, "value", candidate.finish_reason)
                        )
        except Exception:
            if last_usage is not None:
                yield UsageReport(usage_from_gemini(last_usage))
            raise
        finally:
            # google-genai leaves the HTTP response open when its stream is closed
            # early; close it here so the upstream call really ends.
            await recorder.aclose()
        if last_usage is not None:
            yield UsageReport(usage_from_gemini(last_usage))
        yield Finish(_FINISH.get(finish, "other" if finish else "stop"), raw=finish)
