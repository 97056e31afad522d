"""The HTTP/1.1 transport under the provider SDKs' httpx2 clients.

The SDKs still build, sign and send every request through httpx2 and raise their
typed errors; this replaces only the layer below the client (httpx2's default
transport, httpcore2 over anyio), which cost about 0.4 ms of CPU for every read
of a streamed reply: a reply of 40 tokens is 40 reads (docs/performance.md).
Here a connection is an asyncio protocol and responses are parsed by httptools
(llhttp, the parser uvicorn uses): a read is one callback.

Reads can also be *paced*: once a reply is flowing, the caller (the chat stream)
asks, through `paced_reads()`, that a connection be read about once per
interval (on a grid, below: up to half a step of it sooner or later). Tokens
that arrive meanwhile wait in the kernel's socket buffer and are then read,
parsed and handed on together: one wake-up for several tokens, and the chat
stream sends them on together anyway (CHAT_STREAM_FLUSH_SECONDS).
The reads are made on the instants of a grid that all paced connections of the
process share (`on_grid`), so that one wake-up of the event loop serves every
connection due then, rather than each connection waking it at an instant of its
own. Each process's grid has a phase of its own, so that the worker processes'
wake-ups do not all come at the same instants.

What it supports is what the provider calls need: HTTP/1.1 over TCP or TLS (the
stdlib `ssl` module with httpx2's default context: certificates and host names
checked), keep-alive connections pooled per origin, the request's connect, read,
write and pool timeouts, chunked and fixed-length bodies both ways. Not HTTP/2,
proxies or Unix sockets (the clients were never configured for them).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httptools
import httpx2

_UNSAFE_HEADER_BYTES = re.compile(rb"[\r\n\0]")

# An origin as connections are pooled: scheme, host, port and the TLS server name.
Origin = tuple[str, str, int, str]


def on_grid(when: float, step: float) -> float:
    """The instant nearest `when` on this process's grid of `step` seconds of the
    event loop's clock (`when` itself for no grid). Timers set for one instant run
    in one wake-up of the loop, however many connections or replies set them; a
    wake-up is dear where waking a sleeping process costs tens of microseconds of
    CPU. The grid is shifted by `grid_phase()` of a step: the clock is the
    machine's, and with one grid for all, every worker process would wake at the
    same instants, each with its burst of replies to relay, competing for the
    cores then and idle in between (docs/performance.md)."""
    if step <= 0:
        return when
    offset = grid_phase() * step
    return round((when - offset) / step) * step + offset


_phase: tuple[int, float] | None = None


def grid_phase() -> float:
    """This process's phase, a fraction of a step in [0, 1): drawn at random once
    per process (a worker forked from a process that drew one draws its own)."""
    global _phase
    pid = os.getpid()
    if _phase is None or _phase[0] != pid:
        _phase = (pid, random.random())  # noqa: S311 - not a secret
    return _phase[1]


@dataclass(slots=True)
class Pacer:
    """How often a paced caller's connections may be read: `interval` seconds
    (0: as data comes), at instants on a grid of `grid` seconds (on_grid) that
    all of the process's paced connections share, so that the reads due at one
    instant are made in one wake-up. The caller raises the interval once pacing
    no longer costs latency."""

    interval: float = 0.0
    grid: float = 0.0

    def resume_at(self, now: float) -> float:
        """When a connection paused at `now` is read again."""
        return on_grid(now + self.interval, self.grid)


_pacer: contextvars.ContextVar[Pacer | None] = contextvars.ContextVar("read_pacer", default=None)


def paced_reads(grid: float = 0.0) -> Pacer:
    """Responses to requests made from now on in this context (this task) are read
    at the returned pacer's interval, which starts at 0, on instants of `grid`."""
    pacer = Pacer(grid=grid)
    _pacer.set(pacer)
    return pacer


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False
        self.pacer: Pacer | None = None
        self.in_use = False
        self.head_only = False
        self.new_response()

    def new_response(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.body: list[bytes] = []
        self.complete = False
        self.finished = False  # the answer's last byte was parsed
        self.trailing = False
        self.keep_alive = False
        self.until_close = False  # a body that ends when the connection does
        self.error: Exception | None = None
        self.eof = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            # Bytes on an idle connection answer nothing we asked: never let them
            # be read as the answer to the next request.
            self.close()
            return
        if self.error is None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self.error = exc
        self._wake()
        pacer = self.pacer
        if pacer is not None and pacer.interval > 0 and not self.complete and not self._paused:
            assert self.transport is not None
            self._paused = True
            self.transport.pause_reading()
            self.loop.call_at(pacer.resume_at(self.loop.time()), self._resume)

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.until_close and self.headers_done:
            self.complete = True
        self._wake()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        if self.until_close and self.headers_done and exc is None:
            self.complete = True
        self._wake()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        if self.finished:
            # More after the answer, unasked: the connection's framing can no
            # longer be trusted. It is closed after this response.
            self.trailing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.finished:
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.finished:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # informational: the real answer follows
        self.status = status
        self.headers_done = True
        names = {name.lower() for name, _ in self.headers}
        no_body = self.head_only or status in (204, 304)
        if no_body:
            self.complete = True
        elif b"content-length" not in names and b"transfer-encoding" not in names:
            self.until_close = True

    def on_body(self, body: bytes) -> None:
        if self.finished:
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.finished:
            return
        if self.headers_done:
            self.complete = True
            self.finished = True
            # Asked now: once the message is complete the parser starts afresh.
            self.keep_alive = self.parser.should_keep_alive()
        else:  # the end of an informational response
            self.headers.clear()

    # --- waiting

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, limit: float | None) -> None:
        """Until something arrives (or the connection ends); TimeoutError after
        `limit` seconds of nothing."""
        self._waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(limit):
                await self._waiter
        finally:
            self._waiter = None

    async def write(self, data: bytes, limit: float | None) -> None:
        assert self.transport is not None
        self.transport.write(data)
        writable = self._writable
        if writable is not None:
            async with asyncio.timeout(limit):
                await writable

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.until_close
            and not self.head_only
            and not self.eof
            and not self.lost
            and self.error is None
            and not self.trailing
            and self.keep_alive
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


class _ResponseBody(httpx2.AsyncByteStream):
    def __init__(
        self, pool: ProviderTransport, conn: _Connection, request: httpx2.Request, read: Any
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._request = request
        self._read_timeout = read

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx2.StreamClosed()
        while self._conn is conn:  # not once the response is closed
            if conn.body:
                chunk = b"".join(conn.body) if len(conn.body) > 1 else conn.body[0]
                conn.body.clear()
                yield chunk
            elif conn.complete:
                return
            elif conn.error is not None:
                raise httpx2.RemoteProtocolError(
                    f"Invalid HTTP response: {conn.error}", request=self._request
                )
            elif conn.eof:
                raise httpx2.RemoteProtocolError(
                    "The server closed the connection before the end of the body.",
                    request=self._request,
                )
            else:
                try:
                    await conn.wait(self._read_timeout)
                except TimeoutError:
                    raise httpx2.ReadTimeout(
                        "Timed out reading the body.", request=self._request
                    ) from None

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn)


class ProviderTransport(httpx2.AsyncBaseTransport):
    """A connection pool for one event loop (see the module's docstring)."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        max_keepalive_connections: int = 100,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._idle_count = 0
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx2.create_ssl_context()
        return self._ssl_context

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"Unsupported URL scheme {scheme!r}.", request=request)
        port = url.port or (443 if scheme == "https" else 80)
        sni = str(request.extensions.get("sni_hostname") or url.host) if scheme == "https" else ""
        origin: Origin = (scheme, url.host, port, sni)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})

        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("No connection free in the pool.", request=request) from None
        conn: _Connection | None = None
        try:
            conn = self._idle_connection(origin) or await self._connect(
                origin, timeouts.get("connect"), request
            )
            conn.new_response()
            conn.in_use = True
            conn.head_only = request.method == "HEAD"
            conn.pacer = _pacer.get()
            await self._send(conn, request, timeouts.get("write"))
            while not conn.headers_done:
                if conn.error is not None:
                    raise httpx2.RemoteProtocolError(
                        f"Invalid HTTP response: {conn.error}", request=request
                    )
                if conn.eof:
                    raise httpx2.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
                try:
                    await conn.wait(timeouts.get("read"))
                except TimeoutError:
                    raise httpx2.ReadTimeout(
                        "Timed out waiting for the response.", request=request
                    ) from None
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        return httpx2.Response(
            conn.status,
            headers=conn.headers,
            stream=_ResponseBody(self, conn, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            self._idle_count -= 1
            if not conn.lost and not conn.eof and now - conn.idle_since < self._expiry:
                return conn
            conn.close()
        return None

    async def _connect(
        self, origin: Origin, limit: float | None, request: httpx2.Request
    ) -> _Connection:
        scheme, host, port, sni = origin
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = (
            {"ssl": self._ssl(), "server_hostname": sni} if scheme == "https" else {}
        )
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin, loop), host, port, **tls
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout("Timed out connecting.", request=request) from None
        except OSError as exc:  # refused, unreachable, no such host, TLS failures
            raise httpx2.ConnectError(str(exc), request=request) from exc
        return conn

    async def _send(self, conn: _Connection, request: httpx2.Request, limit: Any) -> None:
        url = request.url
        target = url.raw_path or b"/"
        lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1\r\n"]
        names = set()
        for name, value in request.headers.raw:
            if _UNSAFE_HEADER_BYTES.search(name + value):
                # A line break in a header would start a header (or a request) of its own.
                raise httpx2.LocalProtocolError("Invalid header in the request.", request=request)
            names.add(name.lower())
            lines.append(name + b": " + value + b"\r\n")
        if b"host" not in names:
            lines.insert(1, b"Host: " + url.netloc + b"\r\n")
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        lines.append(b"\r\n")
        head = b"".join(lines)
        try:
            stream = request.stream
            if isinstance(stream, httpx2.ByteStream):  # the usual case: bytes, one write
                await conn.write(head + b"".join(stream), limit)
                return
            await conn.write(head, limit)
            assert isinstance(stream, httpx2.AsyncByteStream)
            async for part in stream:
                if part:
                    await conn.write(
                        b"%x\r\n%b\r\n" % (len(part), part) if chunked else part, limit
                    )
            if chunked:
                await conn.write(b"0\r\n\r\n", limit)
        except TimeoutError:
            raise httpx2.WriteTimeout("Timed out sending the request.", request=request) from None

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        conn.pacer = None
        conn.in_use = False
        if self._closed or not conn.reusable:
            conn.close()
            return
        if conn._paused:
            conn._resume()
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, deque()).append(conn)
        self._idle_count += 1
        while self._idle_count > self._max_idle:
            self._drop_oldest_idle()

    def _drop_oldest_idle(self) -> None:
        oldest = min(
            (queue for queue in self._idle.values() if queue),
            key=lambda queue: queue[0].idle_since,
        )
        oldest.popleft().close()
        self._idle_count -= 1

    async def aclose(self) -> None:
        self._closed = True
        for queue in self._idle.values():
            for conn in queue:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
