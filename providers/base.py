"""The one interface every provider adapter implements.

An adapter turns a `ChatRequest` into an async stream of events — text deltas, the
usage the provider reported, the finish reason, or an error — over the vendor's
official SDK. `Provider.stream()` wraps each adapter with what they all share:
retries before the first token, first-token and idle timeouts, and error mapping
to one `ProviderError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx2
from django.conf import settings

logger = logging.getLogger(__name__)

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    system: str = ""
    max_output_tokens: int | None = None
    temperature: float | None = None
    # Reasoning, in the vendor's own terms: OpenAI's effort, or a thinking budget in
    # tokens (Anthropic's extended thinking, Gemini's thinking budget).
    reasoning_effort: str | None = None
    thinking_budget: int | None = None


@dataclass(frozen=True)
class Credentials:
    """What a call is made with. `__repr__` never shows the key."""

    api_key: str = field(repr=False)
    base_url: str = ""
    key_source: Literal["user", "server", "none"] = "user"

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, key_source={self.key_source!r})"


MAX_TOKENS = 2**31 - 1
"""The most tokens one count may hold: what the ledger's columns store on every
database. A larger count from a provider is a provider's bug, recorded as this."""


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them, normalized across vendors.

    input_tokens: every input token billed, cached ones included.
    cached_tokens: the part of the input read from cache.
    cache_write_tokens: the part of the input written to cache (Anthropic).
    output_tokens: every output token billed, reasoning/thinking included.
    reasoning_tokens: the part of the output spent reasoning.
    """

    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        if min(self.input_tokens, self.cached_tokens, self.cache_write_tokens) < 0:
            raise ValueError("token counts cannot be negative")
        if self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached and cache-write tokens are part of the input")
        if not 0 <= self.reasoning_tokens <= self.output_tokens:
            raise ValueError("reasoning tokens are part of the output")
        if max(self.input_tokens, self.output_tokens) > MAX_TOKENS:
            raise ValueError(f"token counts are at most {MAX_TOKENS}")

    @classmethod
    def normalized(
        cls,
        *,
        input_tokens: Any,
        cached_tokens: Any = 0,
        cache_write_tokens: Any = 0,
        output_tokens: Any,
        reasoning_tokens: Any = 0,
    ) -> Usage:
        """A Usage from whatever numbers a provider sent. Provider data is not
        allowed to break a reply: a missing or malformed count is 0, a count
        beyond MAX_TOKENS is MAX_TOKENS, and parts that exceed their whole (a
        vendor bug) stretch the whole, up to that bound, instead of raising."""
        cached, write = token_count(cached_tokens), token_count(cache_write_tokens)
        whole_input = min(max(token_count(input_tokens), cached + write), MAX_TOKENS)
        cached = min(cached, whole_input)
        output = token_count(output_tokens)
        reasoning = token_count(reasoning_tokens)
        return cls(
            input_tokens=whole_input,
            cached_tokens=cached,
            cache_write_tokens=min(write, whole_input - cached),
            output_tokens=max(output, reasoning),
            reasoning_tokens=reasoning,
        )


def token_count(value: Any) -> int:
    """A token count as a provider sent it, as an int in 0..MAX_TOKENS."""
    if isinstance(value, bool):
        return 0
    try:
        number = int(value or 0)
    except (TypeError, ValueError, OverflowError):  # text, NaN, infinity
        return 0
    return min(max(number, 0), MAX_TOKENS)


ErrorCode = Literal[
    "invalid_key",
    "permission_denied",
    "insufficient_quota",
    "rate_limited",
    "overloaded",
    "context_too_long",
    "timeout",
    "unavailable",
    "bad_request",
    "content_filtered",
    "unsafe_url",
]

_MESSAGES: dict[str, str] = {
    "invalid_key": "The provider rejected the API key. Check it on the keys page.",
    "permission_denied": "This API key is not allowed to use this model.",
    "insufficient_quota": (
        "The provider says this account is out of credit or quota. Check its billing."
    ),
    "rate_limited": "The provider is rate-limiting this key. Try again shortly.",
    "overloaded": "The provider is overloaded right now. Try again in a moment.",
    "context_too_long": (
        "The conversation is too long for this model. Start a new one or pick a model "
        "with a larger context window."
    ),
    "timeout": "The provider took too long to answer.",
    "unavailable": "The provider could not be reached or had an internal error.",
    "bad_request": "The provider refused the request as invalid.",
    "content_filtered": "The provider stopped the reply with its content filter.",
    "unsafe_url": "This base URL is not allowed.",
}

# Worth another try before the first token; the rest fail the same way again.
RETRYABLE: frozenset[str] = frozenset({"rate_limited", "overloaded", "unavailable", "timeout"})


class ProviderError(Exception):
    """Any failure talking to a provider, with a stable code and a message a user
    understands. Built from our own text, never the vendor's (which may echo part
    of the key)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message or _MESSAGES[code]
        self.retry_after = retry_after
        self.status = status
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    @property
    def refused(self) -> bool:
        """Whether the call was turned away before the provider ran the model (an
        error status, or our own URL guard): nothing of it is billed."""
        return self.status is not None or self.code == "unsafe_url"

    def __repr__(self) -> str:
        return f"ProviderError({self.code!r}, status={self.status!r})"


# --- Events -------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class UsageReport:
    """The provider's usage. `final` is False when the stream broke off and this is
    the last count the provider sent before that."""

    usage: Usage
    final: bool = True


FinishReason = Literal["stop", "max_tokens", "content_filter", "other"]


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    raw: str = ""


@dataclass(frozen=True)
class Failure:
    error: ProviderError


Event = TextDelta | UsageReport | Finish | Failure


# --- The interface ------------------------------------------------------------


class Provider(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    needs_key: ClassVar[bool] = True
    # Only the compatible provider lets a user point it at their own server.
    user_base_url: ClassVar[bool] = False
    # What the vendor's keys look like, where it has a fixed shape: a paste of the
    # wrong thing (another vendor's key, a sentence) is refused before it is saved.
    key_pattern: ClassVar[re.Pattern[str] | None] = None
    key_shape: ClassVar[str] = ""
    # The parameters a user may set per conversation, as the vendor takes them.
    max_temperature: ClassVar[float] = 2.0
    reasoning_efforts: ClassVar[tuple[str, ...]] = ()
    thinking_budgets: ClassVar[tuple[int, int] | None] = None  # least and most tokens

    @abstractmethod
    def _events(self, request: ChatRequest, creds: Credentials) -> AsyncIterator[Event]:
        """The vendor call: yield events; raise vendor exceptions as they come."""

    @abstractmethod
    async def _check_key(self, creds: Credentials) -> None:
        """A cheap authenticated call (listing models); raise on failure."""

    @abstractmethod
    def map_error(self, exc: BaseException) -> ProviderError | None:
        """The vendor exception as a ProviderError, or None if it is not one of ours."""

    # The settings naming the operator's base URL and server key, if any.
    base_url_setting: ClassVar[str] = ""
    api_key_setting: ClassVar[str] = ""

    def operator_base_url(self) -> str:
        """Where calls go (the operator's setting: trusted)."""
        return str(getattr(settings, self.base_url_setting, "")) if self.base_url_setting else ""

    def server_credentials(self) -> Credentials | None:
        """The operator's key for this provider, if configured."""
        key = str(getattr(settings, self.api_key_setting, "")) if self.api_key_setting else ""
        return Credentials(key, self.operator_base_url(), "server") if key else None

    def canonical_model(self, model: str) -> str:
        """The id the price table knows a model by, for an id the provider also
        takes in another spelling (so that it is priced as what it is)."""
        return model

    async def _list_models(self, creds: Credentials) -> list[str]:
        """The ids of the chat models the provider offers this key (a listing call)."""
        return []

    async def check_key(self, creds: Credentials) -> None:
        """Raise ProviderError unless the key works."""
        await self._short_call(self._check_key(creds))

    async def _count_input_tokens(self, request: ChatRequest, creds: Credentials) -> int | None:
        """The vendor's own count of a request's input tokens, where it has an
        endpoint for it (None: it has none)."""
        return None

    async def count_input_tokens(self, request: ChatRequest, creds: Credentials) -> int | None:
        """The request's input tokens as the vendor counts them (a free call, made
        before sending, for an estimate), or None where it cannot; ProviderError."""
        return await self._short_call(self._count_input_tokens(request, creds))

    async def list_models(self, creds: Credentials) -> list[str]:
        """The chat models the provider lists for this key, sorted; ProviderError
        unless it answers."""
        return sorted(set(await self._short_call(self._list_models(creds))))

    async def _short_call[R](self, call: Coroutine[Any, Any, R]) -> R:
        """A quick call that is not a chat (a key check, a listing), its failures
        as ProviderError."""
        try:
            async with asyncio.timeout(settings.PROVIDER_CONNECT_TIMEOUT * 3):
                return await call
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise ProviderError("timeout") from exc
        except Exception as exc:
            raise self.as_provider_error(exc) from exc

    def stream(self, request: ChatRequest, creds: Credentials) -> ChatStream:
        """The reply as events; see ChatStream."""
        return ChatStream(self, request, creds)

    async def timed(self, events: AsyncIterator[Event]) -> AsyncGenerator[Event]:
        # The first token may take long (reasoning models); after it, a silent
        # stream is a stuck one. Both limits come from settings.
        iterator = aiter(events)
        silence = _Silence(settings.PROVIDER_FIRST_TOKEN_TIMEOUT)
        try:
            while True:
                silence.waiting()
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if silence.timed_out():
                        raise ProviderError("timeout") from None
                    raise
                finally:
                    silence.heard()
                if isinstance(event, TextDelta):
                    silence.limit = settings.PROVIDER_IDLE_TIMEOUT
                yield event
        finally:
            silence.close()
            # Closing the adapter's generator closes the SDK stream and its connection.
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def as_provider_error(self, exc: BaseException) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        mapped = self.map_error(exc)
        if mapped is not None:
            return mapped
        # The HTTP client's own failures, outside any SDK's wrapping: the same for all.
        if isinstance(exc, httpx2.TimeoutException):
            return ProviderError("timeout")
        if isinstance(exc, httpx2.TransportError):
            return ProviderError("unavailable")
        # An unexpected failure: log its type only (its text could hold anything).
        logger.error(
            "provider call failed unexpectedly",
            extra={"provider": self.name, "error_type": type(exc).__name__},
        )
        return ProviderError("unavailable")

    def should_retry(self, error: ProviderError, attempt: int) -> bool:
        if not error.retryable or attempt >= settings.PROVIDER_MAX_RETRIES:
            return False
        # A long Retry-After is the user's to wait for, not ours.
        return error.retry_after is None or error.retry_after <= settings.PROVIDER_MAX_RETRY_WAIT

    def backoff(self, error: ProviderError, attempt: int) -> float:
        if error.retry_after is not None:
            return float(error.retry_after)
        base = settings.PROVIDER_RETRY_BACKOFF * 2 ** (attempt - 1)
        return float(base * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto


class _Silence:
    """A time limit on each wait for a stream's next event, as `asyncio.timeout`
    around each `anext()` would be, at the cost of one timer per `limit` seconds
    instead of one per event (a timer set and cancelled for every token was a
    few per cent of a busy worker's time: docs/performance.md).

    The timer only cancels the task while it waits for the stream (between
    `waiting()` and `heard()`): whatever the stream's consumer awaits between
    two events is never cut short."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._deadline = 0.0
        self._cancelling = 0
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def waiting(self) -> None:
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task else 0
        self._deadline = self._loop.time() + self.limit
        # Set when there is none, or sooner when the limit shrank (after the
        # first token); a later deadline waits for the timer to come round.
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._check)

    def heard(self) -> None:
        if self._expired and self._task is not None:
            # Cancelled, yet the stream answered (it did not let the cancel
            # through): take the cancel back, as asyncio.timeout does.
            self._expired = False
            self._task.uncancel()
        self._task = None

    def _check(self) -> None:
        self._timer = None
        if self._task is None:  # not waiting: the next wait sets the timer again
            return
        if self._loop.time() < self._deadline:  # heard from since: wait on
            self._timer = self._loop.call_at(self._deadline, self._check)
            return
        self._expired = True
        self._task.cancel()

    def timed_out(self) -> bool:
        """Whether the CancelledError being handled is this limit's own (and not
        someone else's cancel, which must go on)."""
        if not self._expired or self._task is None:
            return False
        self._expired = False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ChatStream:
    """One reply, as an async iterator of events.

    Yields TextDelta events as they arrive, then exactly one of:
    - UsageReport(final=True) (when the provider reported usage) and Finish, or
    - UsageReport(final=False) (when some usage was reported before the failure)
      and Failure.

    Failures before the first token that are worth another try (rate limits,
    overload, 5xx, timeouts) are retried, up to PROVIDER_MAX_RETRIES; usage billed
    by a failed attempt is added to the total. `usage` holds the latest total at
    any time, so a caller that stops early (the user pressed Stop) still has what
    the provider reported so far. Stopping early, or `aclose()`, closes the
    upstream connection.
    """

    def __init__(self, provider: Provider, request: ChatRequest, creds: Credentials) -> None:
        self.provider = provider
        self.request = request
        self.creds = creds
        self.usage: Usage | None = None
        self.attempts = 0
        self._events = self._run()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Event]:
        provider = self.provider
        billed: Usage | None = None  # what earlier, failed attempts were billed
        text = _TextCleaner()
        while True:
            self.attempts += 1
            started = False
            finish: Finish | None = None
            try:
                # aclosing: when our caller stops early (a client disconnect), the
                # SDK stream and its connection close now, not at garbage collection.
                raw = provider.timed(provider._events(self.request, self.creds))
                async with aclosing(raw) as events:
                    async for event in events:
                        if isinstance(event, UsageReport):
                            # Reports within an attempt are cumulative: latest wins.
                            self.usage = _add(billed, event.usage)
                        elif isinstance(event, Finish):
                            finish = event
                        elif isinstance(event, TextDelta):
                            clean = text.clean(event.text)
                            if clean:
                                started = True
                                yield TextDelta(clean)
                        else:
                            yield event
                if rest := text.end():
                    yield TextDelta(rest)
                if self.usage is not None:
                    yield UsageReport(self.usage, final=True)
                yield finish or Finish("stop")
                return
            except Exception as exc:
                error = provider.as_provider_error(exc)
            billed = self.usage
            attempt = self.attempts - 1
            if not started and provider.should_retry(error, attempt):
                delay = provider.backoff(error, attempt + 1)
                logger.info(
                    "provider retry",
                    extra={"provider": provider.name, "code": error.code, "attempt": attempt + 1},
                )
                await asyncio.sleep(delay)
                continue
            if rest := text.end():
                yield TextDelta(rest)
            if self.usage is not None:
                yield UsageReport(self.usage, final=False)
            yield Failure(error)
            return


_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")
_HIGH_SURROGATE = re.compile("[\ud800-\udbff]\\Z")


class _TextCleaner:
    """A reply's text as valid Unicode that every database and renderer takes.

    JSON lets a provider send UTF-16 surrogates as escapes, and a stream may
    split a pair across two chunks: a high surrogate at the end of a chunk waits
    for the next, pairs are joined into their character, and a lone surrogate or
    a NUL (which PostgreSQL's text cannot hold) becomes U+FFFD."""

    def __init__(self) -> None:
        self._pending = ""

    def clean(self, chunk: str) -> str:
        if self._pending:
            chunk, self._pending = self._pending + chunk, ""
        if not _UNSAFE_TEXT.search(chunk):
            return chunk
        if _HIGH_SURROGATE.search(chunk):
            chunk, self._pending = chunk[:-1], chunk[-1]
        joined = chunk.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return joined.replace("\x00", "\ufffd")

    def end(self) -> str:
        """What is still held back once the stream ends: a lone high surrogate."""
        pending, self._pending = self._pending, ""
        return "\ufffd" if pending else ""


def clean_text(text: str) -> str:
    """A whole text as _TextCleaner makes a stream's."""
    cleaner = _TextCleaner()
    return cleaner.clean(text) + cleaner.end()


def _add(a: Usage | None, b: Usage) -> Usage:
    if a is None:
        return b
    return Usage.normalized(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )
