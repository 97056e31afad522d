"""The one place where provider HTTP clients are built.

Every SDK client gets the same explicit timeouts, no redirects and no SDK retries
(`Provider.stream` retries, only before the first token and never on 4xx or an
exhausted quota — the SDKs would retry `insufficient_quota` 429s). The underlying
`httpx2` clients, with their connection pools and TLS contexts, are shared per event
loop; so are the SDK clients themselves (per key and base URL, the most recent few
hundred).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

import httpx2
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from providers.base import Credentials
from providers.transport import ProviderTransport
from providers.urlsafety import SafeAsyncTransport

if TYPE_CHECKING:
    import anthropic
    import openai
    from google import genai

_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, httpx2.AsyncBaseTransport]
] = weakref.WeakKeyDictionary()
_sync_client: httpx2.Client | None = None
_lock = threading.Lock()


def timeout() -> httpx2.Timeout:
    read = max(settings.PROVIDER_FIRST_TOKEN_TIMEOUT, settings.PROVIDER_IDLE_TIMEOUT)
    return httpx2.Timeout(
        connect=settings.PROVIDER_CONNECT_TIMEOUT,
        read=read,
        write=30.0,
        pool=settings.PROVIDER_CONNECT_TIMEOUT,
    )


# Per event loop and kind of URL: connections open at once, and kept idle.
_MAX_CONNECTIONS = 1000
_MAX_IDLE = 100


def _transport(kind: str) -> httpx2.AsyncBaseTransport:
    """The connection pool for this event loop: "operator" URLs, or "user" URLs
    (checked against private and reserved networks at connect time)."""
    loop = asyncio.get_running_loop()
    transports = _pools.setdefault(loop, {})
    transport = transports.get(kind)
    if transport is None:
        if kind == "user":
            limits = httpx2.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_IDLE
            )
            transport = SafeAsyncTransport(
                allowed=list(settings.ALLOWED_PRIVATE_BASE_URLS), limits=limits
            )
        else:
            transport = ProviderTransport(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_IDLE
            )
        transports[kind] = transport
    return transport


def http_client(
    *, user_base_url: bool = False, recorder: ResponseRecorder | None = None
) -> httpx2.AsyncClient:
    """An async HTTP client over this loop's shared connection pool.

    `user_base_url`: the URL came from a user (DNS-rebinding-safe pool).
    `recorder`: remember every response, so the call can close them itself.
    """
    transport = _transport("user" if user_base_url else "operator")
    if recorder is not None:
        transport = recorder.wrap(transport)
    # Cheap: with a transport given, no TLS context or pool is created here.
    # No cookies kept: a client is reused across calls (and, for the server's key,
    # across users), and nothing a provider sets should carry from one to the next.
    return httpx2.AsyncClient(
        transport=transport,
        timeout=timeout(),
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


class ResponseRecorder:
    """Closes the responses of one call, for SDKs whose streams do not close their
    HTTP response when the caller stops early (google-genai)."""

    def __init__(self) -> None:
        self.responses: list[httpx2.Response] = []

    def wrap(self, transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
        return _RecordingTransport(transport, self)

    async def aclose(self) -> None:
        for response in self.responses:
            await response.aclose()
        self.responses.clear()


class _RecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, recorder: ResponseRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        self.recorder.responses.append(response)
        return response

    async def aclose(self) -> None:
        # The pool is shared: closing one call's client must not close it.
        pass


def _sync_http_client() -> httpx2.Client:
    # google-genai builds a sync client too unless given one; share one that is
    # never used, rather than pay for a TLS context on every call.
    global _sync_client
    with _lock:
        if _sync_client is None:
            _sync_client = httpx2.Client(timeout=timeout(), follow_redirects=False)
        return _sync_client


# SDK clients made recently on each event loop, by vendor, key and base URL. A new
# SDK client costs more than its constructor: on its first request it works out
# the platform for its headers in a worker thread. Bounded: least recently used
# go first. A key deleted or rotated stays in this process's memory, inside its
# client, until pushed out (256 newer clients) or the worker restarts.
_CLIENTS_PER_LOOP = 256
_sdk_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, OrderedDict[tuple[str, ...], Any]
] = weakref.WeakKeyDictionary()


@sensitive_variables()  # the key, and the SDK frames beneath that hold it
def _reused(key: tuple[str, ...], make: Callable[[], Any]) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a sync caller): nothing to share with
        return make()
    # Settings that shape a client (tests change them): a change makes a new one.
    key += (
        str(settings.PROVIDER_CONNECT_TIMEOUT),
        str(settings.PROVIDER_FIRST_TOKEN_TIMEOUT),
        str(settings.PROVIDER_IDLE_TIMEOUT),
    )
    cache = _sdk_clients.setdefault(loop, OrderedDict())
    client = cache.get(key)
    if client is None:
        client = cache[key] = make()
        while len(cache) > _CLIENTS_PER_LOOP:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return client


@sensitive_variables()  # the key, and the SDK frames beneath that hold it
def openai_client(creds: Credentials, *, user_base_url: bool = False) -> openai.AsyncOpenAI:
    import openai

    def make() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=creds.api_key,
            base_url=creds.base_url or None,
            http_client=http_client(user_base_url=user_base_url),
            max_retries=0,
            timeout=timeout(),
        )

    key = ("openai", creds.api_key, creds.base_url, "user" if user_base_url else "operator")
    client: openai.AsyncOpenAI = _reused(key, make)
    return client


@sensitive_variables()  # the key, and the SDK frames beneath that hold it
def anthropic_client(creds: Credentials) -> anthropic.AsyncAnthropic:
    import anthropic

    def make() -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=creds.api_key,
            base_url=creds.base_url or None,
            http_client=http_client(),
            max_retries=0,
            timeout=timeout(),
        )

    client: anthropic.AsyncAnthropic = _reused(("anthropic", creds.api_key, creds.base_url), make)
    return client


@sensitive_variables()  # the key, and the SDK frames beneath that hold it
def google_client(creds: Credentials, *, recorder: ResponseRecorder | None = None) -> genai.Client:
    from google import genai
    from google.genai import types

    return genai.Client(
        api_key=creds.api_key,
        http_options=types.HttpOptions(
            base_url=creds.base_url or None,
            api_version="v1beta",
            timeout=int(timeout().read * 1000),  # type: ignore[operator]
            # One attempt: retries are Provider.stream's, the same for every vendor.
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_client=_sync_http_client(),
            httpx_async_client=http_client(recorder=recorder),
        ),
    )
