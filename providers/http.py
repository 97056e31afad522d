"""The one place where provider HTTP clients are built.

Every SDK client gets the same explicit timeouts, no redirects and no SDK retries
(`Provider.stream` retries, only before the first token and never on 4xx or an
exhausted quota — the SDKs would retry `insufficient_quota` 429s). Underneath,
every SDK's httpx2 client runs on aiohttp, through the transport the openai SDK
ships for it (`openai.DefaultAioHttpClient`'s; the anthropic SDK ships the same,
google-genai takes any httpx2 client): a read of a streamed reply costs less
than on httpx2's own transport, and a read brings whatever has arrived
(docs/performance.md). One aiohttp session, with its connection pool, per event
loop for the operator's URLs, and one for users' URLs whose connections are
checked against private networks (providers.urlsafety, providers.resolver); the
SDK clients are reused per event loop, key and base URL.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

import httpx2
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from providers.base import Credentials
from providers.urlsafety import GuardedTransport

if TYPE_CHECKING:
    import anthropic
    import openai
    from google import genai

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


# Per event loop and kind of URL: the most connections open at once.
_MAX_CONNECTIONS = 1000

# The transports of each event loop, by kind of URL. aiohttp binds a session to
# its loop: the entries of a loop that has closed (a test's, or a sync caller's
# async_to_sync) are dropped and their sessions closed, as google-genai does
# with its own sessions.
_transports: dict[asyncio.AbstractEventLoop, dict[str, httpx2.AsyncBaseTransport]] = {}
_closing: set[asyncio.Task[None]] = set()


def _transport(kind: str) -> httpx2.AsyncBaseTransport:
    """This event loop's connection pool for "operator" URLs, or for "user" URLs
    (checked against private and reserved networks before every connection)."""
    loop = asyncio.get_running_loop()
    _drop_closed_loops()
    transports = _transports.setdefault(loop, {})
    transport = transports.get(kind)
    if transport is None:
        if kind == "user":
            allowed = list(settings.ALLOWED_PRIVATE_BASE_URLS)
            transport = GuardedTransport(_aiohttp_transport(allowed), allowed=allowed)
        else:
            transport = _aiohttp_transport()
        transports[kind] = transport
    return transport


def _aiohttp_transport(guard_for: list[str] | None = None) -> httpx2.AsyncBaseTransport:
    """An httpx2 transport over a new aiohttp session; with `guard_for` (the
    origins the operator vouches for), its names resolve through GuardedResolver."""
    # Imported here: each takes a while, and management commands need neither.
    import aiohttp
    from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

    from providers.resolver import GuardedResolver

    connector = aiohttp.TCPConnector(
        limit=_MAX_CONNECTIONS,
        ssl=httpx2.create_ssl_context(),
        resolver=GuardedResolver(allowed=guard_for) if guard_for is not None else None,
    )
    # No cookies kept: a session serves every call (and, with the server's key,
    # every user), and nothing a provider sets may carry from one to the next.
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
    return AiohttpTransport(client=session)


def _drop_closed_loops() -> None:
    # Snapshots (list() is atomic): threads with loops of their own may add entries.
    for loop in [loop for loop in list(_transports) if loop.is_closed()]:
        for transport in _transports.pop(loop, {}).values():
            # Its loop is gone: nothing is left to wait for, but a session not
            # closed says so when it is collected.
            task = asyncio.get_running_loop().create_task(transport.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
    for loop in [loop for loop in list(_sdk_clients) if loop.is_closed()]:
        _sdk_clients.pop(loop, None)


async def aclose_all() -> None:
    """Close every loop's sessions (at the end of a process that made many loops)."""
    for transports in list(_transports.values()):
        for transport in transports.values():
            await transport.aclose()
    _transports.clear()
    _sdk_clients.clear()


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
_sdk_clients: dict[asyncio.AbstractEventLoop, OrderedDict[tuple[str, ...], Any]] = {}


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
