"""The provider HTTP transport (providers/transport.py) against real loopback servers:
keep-alive, bodies, errors, timeouts, TLS and paced reads."""

from __future__ import annotations

import asyncio
import datetime
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest

from providers import transport
from providers.transport import Pacer, ProviderTransport, on_grid, paced_reads

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""


async def _serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Any:
    state = Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    state.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    return server, state


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                break
            body += chunk[:-2]
        return head + body
    return head + (await reader.readexactly(length) if length else b"")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _chunked(parts: list[bytes], pause: float = 0.0) -> Handler:
    """A server that answers one request with `parts` as chunks, `pause` s apart."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(_chunk(part))
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handler


def _client(**kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=ProviderTransport(**kwargs), timeout=5)


def _answering(answer: bytes, requests: list[bytes] | None = None) -> Handler:
    """A keep-alive server that sends `answer` for every request (kept in `requests`)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await _read_request(reader)
            if requests is not None:
                requests.append(request)
            writer.write(answer)
            await writer.drain()

    return handler


async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    requests: list[bytes] = []
    server, state = await _serve(
        _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", requests)
    )
    async with server, _client() as client:
        for n in range(3):
            response = await client.post(f"{state.url}/v1/x?n={n}", json={"n": n})
            assert (response.status_code, response.text) == (200, "ok")
    assert state.connections == 1
    assert requests[2].startswith(b"POST /v1/x?n=2 HTTP/1.1\r\n")
    assert b'"n":2' in requests[2].replace(b" ", b"")
    assert b"\r\nhost: 127.0.0.1:" in requests[0].lower()


async def test_a_streamed_request_body_goes_chunked() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.requests.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    server, state = await _serve(handler)
    async with server, _client() as client:
        response = await client.post(state.url, content=parts())
    assert response.status_code == 204
    assert state.requests[0].endswith(b"\r\n\r\nhello world")


async def test_a_chunked_streamed_response_arrives_whole_and_in_order() -> None:
    server, state = await _serve(_chunked([b"data: %d\n\n" % n for n in range(20)]))
    async with server, _client() as client, client.stream("GET", state.url) as response:
        body = b"".join([part async for part in response.aiter_bytes()])
    assert body == b"".join(b"data: %d\n\n" % n for n in range(20))


async def test_a_body_ended_by_closing_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    server, state = await _serve(handler)
    async with server, _client() as client:
        response = await client.get(state.url)
        assert response.text == "until the end"
        await client.get(state.url)
    assert state.connections == 2  # such a connection is never reused


async def test_an_informational_response_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-A: b\r\n\r\ndone")
        await writer.drain()

    server, state = await _serve(handler)
    async with server, _client() as client:
        response = await client.post(state.url, content=b"x")
    assert (response.status_code, response.text, response.headers["x-a"]) == (201, "done", "b")


async def test_a_body_cut_short_is_an_error_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"part"))
        await writer.drain()

    server, state = await _serve(handler)
    async with server, _client() as client, client.stream("GET", state.url) as response:
        with pytest.raises(httpx2.RemoteProtocolError):
            async for _ in response.aiter_bytes():
                pass


async def test_a_response_closed_unread_closes_its_connection() -> None:
    """Its unread bytes must never reach the next request on that connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b"56789")
            await writer.drain()

    server, state = await _serve(handler)
    async with server, _client() as client:
        async with client.stream("GET", state.url):
            pass  # closed with half of its body still to come
        response = await client.get(state.url)
        assert response.text == "0123456789"
    assert state.connections == 2


async def test_no_answer_is_a_read_timeout_and_a_refused_port_a_connect_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(1)

    server, state = await _serve(handler)
    async with server, _client() as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(state.url, timeout=httpx2.Timeout(5, read=0.2))
    async with _client() as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get(state.url)  # the server is closed now


async def test_the_pool_waits_for_a_free_connection_then_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, state = await _serve(handler)
    async with (
        server,
        _client(max_connections=1) as client,
        client.stream("GET", state.url),
    ):
        with pytest.raises(httpx2.PoolTimeout):
            await client.get(state.url, timeout=httpx2.Timeout(5, pool=0.1))


async def test_paced_reads_join_what_arrives_within_the_interval() -> None:
    server, state = await _serve(_chunked([b"%d," % n for n in range(10)], pause=0.01))
    async with server, _client() as client:
        pacer = paced_reads()
        pacer.interval = 0.5
        async with client.stream("GET", state.url) as response:
            parts = [part async for part in response.aiter_raw()]
    # The first read comes at once; the other nine pieces wait and come together.
    assert b"".join(parts) == b"0,1,2,3,4,5,6,7,8,9,"
    assert len(parts) <= 3


def test_paced_reads_resume_on_the_grid_every_paced_connection_shares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "grid_phase", lambda: 0.0)
    assert on_grid(10.04, 0.05) == pytest.approx(10.05)
    assert on_grid(10.02, 0.05) == pytest.approx(10.0)
    assert on_grid(10.02, 0) == 10.02  # no grid
    pacer = Pacer(interval=0.2, grid=0.05)
    # Paused at different moments, connections are read again at the same instants.
    assert pacer.resume_at(100.003) == pacer.resume_at(100.019) == pytest.approx(100.2)
    assert pacer.resume_at(100.03) == pytest.approx(100.25)
    assert Pacer(interval=0.2).resume_at(100.003) == pytest.approx(100.203)


def test_each_process_has_its_grid_shifted_by_a_phase_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "grid_phase", lambda: 0.5)
    assert on_grid(10.04, 0.05) == pytest.approx(10.025)
    assert on_grid(10.06, 0.05) == pytest.approx(10.075)
    assert Pacer(interval=0.2, grid=0.05).resume_at(100.003) == pytest.approx(100.225)
    monkeypatch.undo()
    phase = transport.grid_phase()
    assert 0 <= phase < 1
    assert transport.grid_phase() == phase  # the same for the life of the process
    # A process forked from this one (gunicorn's workers) draws its own: another
    # process id, another phase, kept for its life.
    monkeypatch.setattr(transport, "_phase", transport._phase)  # this process's, back after
    monkeypatch.setattr(transport.os, "getpid", lambda: -1)
    forked = transport.grid_phase()
    assert forked != phase
    assert transport.grid_phase() == forked


async def test_paced_reads_are_made_on_the_instants_of_the_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "grid_phase", lambda: 0.0)  # the start is timed to it
    server, state = await _serve(_chunked([b"%d," % n for n in range(40)], pause=0.01))
    loop = asyncio.get_running_loop()
    async with server, _client() as client:
        pacer = paced_reads(grid=0.1)
        pacer.interval = 0.1
        # Start half-way between two instants of the grid: reads paced from the
        # first one (and not to the grid) would all come half a step off it.
        await asyncio.sleep(math.floor(loop.time() * 10) / 10 + 0.15 - loop.time())
        read_at = []
        async with client.stream("GET", state.url) as response:
            async for _ in response.aiter_raw():
                read_at.append(loop.time())
    # After the first read (at once), each read follows a resume on the grid: in
    # the same wake-up of the loop, a moment after the instant.
    offsets = [t - on_grid(t, 0.1) for t in read_at[1:-1]]
    assert len(offsets) >= 2
    assert all(0 <= offset < 0.04 for offset in offsets), offsets


async def test_tls_checks_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_contexts(tmp_path, "localhost")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()

    server, state = await _serve(handler, server_ctx)
    port = state.url.rsplit(":", 1)[1]
    async with server:
        trusted = httpx2.AsyncClient(transport=ProviderTransport(ssl_context=client_ctx))
        async with trusted:
            response = await trusted.get(f"https://localhost:{port}/")
            assert response.text == "secret"
            with pytest.raises(httpx2.ConnectError):  # the certificate is not for this name
                await trusted.get(f"https://127.0.0.1:{port}/")
        async with httpx2.AsyncClient(transport=ProviderTransport()) as default:
            with pytest.raises(httpx2.ConnectError):  # not signed by a trusted authority
                await default.get(f"https://localhost:{port}/")


def _tls_contexts(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    return server_ctx, client_ctx


async def test_the_chat_stream_paces_reads_only_once_text_flows(settings: Any) -> None:
    """The first token is read as soon as it comes; later ones once per flush."""
    from conversations.api import _END, _pump
    from providers import transport
    from providers.base import Finish, TextDelta

    settings.CHAT_STREAM_FLUSH_SECONDS = 0.05
    seen: list[float] = []

    async def events() -> AsyncIterator[Any]:
        for event in (TextDelta("a"), TextDelta("b"), Finish("stop")):
            pacer = transport._pacer.get()
            assert pacer is not None
            seen.append(pacer.interval)
            yield event

    queue: asyncio.Queue[Any] = asyncio.Queue()
    await asyncio.create_task(_pump(events(), queue))
    assert seen == [0.0, 0.05, 0.05]
    got = [queue.get_nowait() for _ in range(queue.qsize())]
    assert len(got) == 4
    assert got[-1] is _END


async def test_bytes_on_an_idle_connection_are_never_taken_for_the_next_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if state.connections == 1:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # unasked
            await writer.drain()
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
            await writer.drain()

    server, state = await _serve(handler)
    async with server, _client() as client:
        assert (await client.get(state.url)).text == "first"
        await asyncio.sleep(0.2)
        assert (await client.get(state.url)).text == "fresh"
    assert state.connections == 2


async def test_an_answer_with_more_after_it_is_read_alone_and_its_connection_dropped() -> None:
    server, state = await _serve(
        _answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET"
        )
    )
    async with server, _client() as client:
        assert (await client.get(state.url)).text == "hello"
        assert (await client.get(state.url)).text == "hello"
    assert state.connections == 2


async def test_a_body_iterator_stops_once_its_response_is_closed() -> None:
    server, state = await _serve(_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    async with server, _client() as client:
        response = await client.send(client.build_request("GET", state.url), stream=True)
        body = aiter(cast(httpx2.AsyncByteStream, response.stream))
        assert await anext(body) == b"hello"
        await response.aclose()
        # The same connection, for another request whose answer is in, unread:
        async with client.stream("GET", state.url) as other:
            await asyncio.sleep(0.1)
            with pytest.raises(StopAsyncIteration):
                await anext(body)
            assert await other.aread() == b"hello"
    assert state.connections == 1


async def test_a_line_break_in_a_header_is_refused_before_sending() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.requests.append(await reader.read())  # all the client sent, until it closed

    server, state = await _serve(handler)
    async with server, _client() as client:
        with pytest.raises(httpx2.LocalProtocolError):
            await client.get(state.url, headers={"Authorization": "Bearer a\r\nX-Evil: 1"})
    assert state.requests == [b""]
