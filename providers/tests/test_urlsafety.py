"""The SSRF guard: base URLs checked when saved, and every connection checked again."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from providers import urlsafety
from providers.urlsafety import UnsafeURLError, validate_base_url

real_resolve = urlsafety.resolve

PUBLIC_IP = "93.184.215.14"
PUBLIC_IPV6 = "2606:4700::6810:84e5"

# What the fake resolver answers: no test ever asks a real DNS server.
RECORDS: dict[str, list[str]] = {
    "api.example.com": [PUBLIC_IP],
    "api.groq.com": [PUBLIC_IP],
    "ipv6.example.com": [PUBLIC_IPV6],
    "nat64.example.com": ["64:ff9b::5db8:d70e"],  # NAT64 of PUBLIC_IP
    "rebind.example.com": ["10.0.0.5"],
    "mixed.example.com": [PUBLIC_IP, "127.0.0.1"],
    "metadata-alias.example.com": ["169.254.169.254"],
    "ula.example.com": ["fd00::5"],
    "mapped.example.com": ["::ffff:192.168.1.1"],
    "cgnat.example.com": ["100.64.12.34"],
}
ALL_RECORDED_ADDRESSES = sorted(
    {address for addresses in RECORDS.values() for address in addresses}
)


@dataclass
class FakeDNS:
    records: dict[str, list[str]]
    lookups: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        try:
            return list(self.records[host])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS(dict(RECORDS))
    monkeypatch.setattr(urlsafety, "resolve", fake.resolve)
    return fake


@pytest.fixture(autouse=True)
def _nothing_allowed(settings: Any) -> None:
    # Whatever the environment says, these tests start from an empty allow-list.
    settings.ALLOWED_PRIVATE_BASE_URLS = []


MALFORMED = [
    # Not http(s), or no host.
    "ftp://api.example.com/v1",
    "file:///etc/passwd",
    "gopher://api.example.com",
    "javascript:alert(1)",
    "//api.example.com/v1",
    "api.example.com/v1",
    "http://",
    "https:///v1",
    # Credentials, queries and fragments.
    "https://user:pass@api.example.com/v1",
    "https://user@api.example.com/v1",
    "https://api.example.com/v1?api-version=1",
    "https://api.example.com/v1?",
    "https://api.example.com/v1#top",
    # Ports that don't exist.
    "https://api.example.com:0/v1",
    "https://api.example.com:99999/v1",
    # httpx2 takes a dotted quad for an address and refuses leading zeros in it,
    # so these never get as far as the address checks.
    "http://0177.0.0.1",
    "http://127.000.000.001",
]

PRIVATE_ADDRESSES = [
    # IPv4 loopback in every spelling the resolver accepts.
    "http://127.0.0.1:11434",
    "http://127.1",
    "http://0x7f.1",
    "http://2130706433",
    "http://0x7f000001",
    "http://127.0.0.1.",
    "http://127.255.255.254",
    # Other non-global IPv4.
    "http://0.0.0.0",
    "http://0",
    "http://10.0.0.1",
    "http://172.16.0.1",
    "http://192.168.1.20:11434",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1",
    "http://224.0.0.1",
    "http://239.255.255.250",
    "http://240.0.0.1",
    "http://255.255.255.255",
    "http://192.0.0.1",
    "http://192.0.2.1",
    "http://198.51.100.1",
    "http://203.0.113.1",
    "http://198.18.0.1",
    # IPv6, and IPv4 carried inside IPv6.
    "http://[::1]",
    "http://[::]",
    "http://[::ffff:7f00:1]",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:169.254.169.254]",
    "http://[::127.0.0.1]",
    "http://[fe80::1]",
    "http://[fe80::1%25eth0]",
    "http://[fd00::1]",
    "http://[fd00:ec2::254]",
    "http://[ff02::1]",
    "http://[2001:db8::1]",
    "http://[2002:7f00:1::]",
    "http://[2002:a9fe:a9fe::1]",
    "http://[64:ff9b::7f00:1]",
    "http://[64:ff9b::a9fe:a9fe]",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    # Names that resolve somewhere private.
    "https://rebind.example.com/v1",
    "https://mixed.example.com/v1",
    "https://metadata-alias.example.com/v1",
    "https://ula.example.com/v1",
    "https://mapped.example.com/v1",
    "https://cgnat.example.com/v1",
]

INTERNAL_NAMES = [
    # Names that mean "this machine" or "this cloud", refused before any lookup.
    "http://localhost:11434",
    "http://LOCALHOST",
    "http://localhost.",
    "http://ollama.localhost",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata",
    "http://metadata.",
    "http://instance-data",
    "http://instance-data.ec2.internal",
    "http://db.internal",
    "http://printer.local",
    "http://printer.local.",
    "http://nas.localdomain",
    "http://router.home.arpa",
]

REJECTED = [*MALFORMED, *PRIVATE_ADDRESSES, *INTERNAL_NAMES, "https://nowhere.example.com/v1"]


@pytest.mark.parametrize("url", REJECTED)
def test_it_rejects_unsafe_base_urls(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        validate_base_url(url)


@pytest.mark.parametrize("url", PRIVATE_ADDRESSES)
def test_it_rejects_private_and_reserved_addresses_as_such(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="private or reserved network"):
        validate_base_url(url)


@pytest.mark.parametrize("url", INTERNAL_NAMES)
def test_it_rejects_internal_names_without_resolving_them(dns: FakeDNS, url: str) -> None:
    with pytest.raises(UnsafeURLError, match="reserved for local or internal use"):
        validate_base_url(url)
    assert dns.lookups == []


@pytest.mark.parametrize("url", REJECTED)
def test_it_never_puts_an_address_or_the_url_in_the_message(url: str) -> None:
    with pytest.raises(UnsafeURLError) as caught:
        validate_base_url(url)
    message = str(caught.value)
    assert message
    assert "://" not in message
    assert not any(address in message for address in ALL_RECORDED_ADDRESSES)
    assert not any(character.isdigit() for character in message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://api.example.com", "Only http and https URLs are allowed."),
        ("http://10.0.0.1", "This address is on a private or reserved network and cannot be used."),
        ("https://nowhere.example.com", "The host name could not be resolved."),
    ],
)
def test_it_explains_a_refusal_in_plain_words(url: str, message: str) -> None:
    with pytest.raises(UnsafeURLError, match=f"^{message}$"):
        validate_base_url(url)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1"),
        (f"https://{PUBLIC_IP}/v1", f"https://{PUBLIC_IP}/v1"),
        ("  https://api.example.com/v1/ \n", "https://api.example.com/v1"),
        ("https://api.example.com", "https://api.example.com"),
        ("https://API.example.com:8443/v1/", "https://API.example.com:8443/v1"),
        ("http://[2606:4700::6810:84e5]:8080/v1", "http://[2606:4700::6810:84e5]:8080/v1"),
        ("https://ipv6.example.com/v1", "https://ipv6.example.com/v1"),
        ("https://nat64.example.com/v1", "https://nat64.example.com/v1"),
    ],
)
def test_it_accepts_public_urls_and_normalizes_them(url: str, normalized: str) -> None:
    assert validate_base_url(url) == normalized


def test_it_checks_every_address_a_name_resolves_to(dns: FakeDNS) -> None:
    # The first answer is public; the second one is what an attacker hopes gets used.
    with pytest.raises(UnsafeURLError):
        validate_base_url("https://mixed.example.com/v1")
    assert dns.lookups == ["mixed.example.com"]


def test_it_does_not_resolve_an_address_literal(dns: FakeDNS) -> None:
    validate_base_url(f"https://{PUBLIC_IP}/v1")
    with pytest.raises(UnsafeURLError):
        validate_base_url("http://0x7f.1")
    assert dns.lookups == []


def test_it_resolves_through_getaddrinfo() -> None:
    # The real resolver, on a literal: the network guard lets loopback through.
    assert real_resolve("127.0.0.1", 80) == ["127.0.0.1"]


ALLOW_LIST = ["http://192.168.1.20:11434", "http://Ollama.LAN", "https://localhost:9100"]


@pytest.mark.parametrize(
    "url",
    [
        "http://192.168.1.20:11434/v1",
        "http://192.168.1.20:11434",
        "http://ollama.lan/v1",
        "http://ollama.lan:80/v1",
        "https://localhost:9100/v1/",
    ],
)
def test_it_accepts_an_allow_listed_private_url(settings: Any, dns: FakeDNS, url: str) -> None:
    settings.ALLOWED_PRIVATE_BASE_URLS = ALLOW_LIST
    assert validate_base_url(url) == url.rstrip("/")
    assert dns.lookups == []  # the operator vouched for it: no lookup, no check


@pytest.mark.parametrize(
    "url",
    [
        "http://192.168.1.20:11435/v1",  # another port on the same host
        "https://192.168.1.20:11434/v1",  # another scheme
        "http://user:pw@192.168.1.20:11434/v1",
        "http://192.168.1.21:11434/v1",
        "http://ollama.lan:8080/v1",
        "http://localhost:9100/v1",
    ],
)
def test_it_rejects_what_the_allow_list_does_not_name(settings: Any, url: str) -> None:
    settings.ALLOWED_PRIVATE_BASE_URLS = ALLOW_LIST
    with pytest.raises(UnsafeURLError):
        validate_base_url(url)


def test_it_prefers_an_explicit_allow_list_to_the_setting(settings: Any) -> None:
    settings.ALLOWED_PRIVATE_BASE_URLS = ALLOW_LIST
    assert validate_base_url("http://10.0.0.7:8000", allowed=["http://10.0.0.7:8000"])
    with pytest.raises(UnsafeURLError):
        validate_base_url("http://192.168.1.20:11434", allowed=[])


def test_it_ignores_a_malformed_allow_list_entry() -> None:
    allowed = ["http://[::1", "ftp://10.0.0.7", "http://10.0.0.7:8000"]
    with pytest.raises(UnsafeURLError):
        validate_base_url("ftp://10.0.0.7", allowed=allowed)
    assert validate_base_url("http://10.0.0.7:8000", allowed=allowed)


# Connect time: through the client the compatible adapter uses for users' URLs.


@asynccontextmanager
async def user_client(allowed: list[str] | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    from django.conf import settings

    from providers import http

    settings.ALLOWED_PRIVATE_BASE_URLS = allowed or []
    client = http.http_client(user_base_url=True)
    try:
        yield client
    finally:
        await http.aclose_all()


def refused(caught: pytest.ExceptionInfo[httpx2.ConnectError]) -> UnsafeURLError:
    seen: BaseException | None = caught.value
    while seen is not None and not isinstance(seen, UnsafeURLError):
        seen = seen.__cause__ or seen.__context__
    assert isinstance(seen, UnsafeURLError), caught.value
    return seen


@pytest.mark.anyio
async def test_it_refuses_a_name_that_rebinds_to_a_private_address(
    dns: FakeDNS, settings: Any
) -> None:
    dns.records["rebind.example.com"] = [PUBLIC_IP]
    validate_base_url("https://rebind.example.com/v1")
    dns.records["rebind.example.com"] = ["10.0.0.5"]

    async with user_client() as client:
        with pytest.raises(httpx2.ConnectError) as caught:
            await client.get("https://rebind.example.com/v1/models")

    # Refused as it resolved (no connection: the tests' network guard would say so).
    assert "10.0.0.5" not in str(refused(caught))
    assert dns.lookups[-1] == "rebind.example.com"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://0x7f.1:11434/v1/models",
        "http://127.1/v1/models",
        "http://2130706433/v1/models",
        "http://[::ffff:127.0.0.1]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://mixed.example.com/v1/models",
        "https://nowhere.example.com/v1/models",
    ],
)
async def test_it_refuses_to_connect_to_a_private_address(url: str, settings: Any) -> None:
    async with user_client() as client:
        with pytest.raises(httpx2.ConnectError) as caught:
            await client.get(url)
    refused(caught)


@dataclass
class TinyServer:
    port: int
    seen: list[tuple[str, str]]  # (Host header, path) of each request


@asynccontextmanager
async def tiny_server() -> AsyncIterator[TinyServer]:
    """An HTTP/1.1 server on loopback: 200 everywhere, but /redirect points at the
    cloud metadata service."""
    server_state = TinyServer(port=0, seen=[])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        path = request_line.split(" ")[1]
        server_state.seen.append((headers["host"], path))
        if path == "/redirect":
            status = "302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/"
        else:
            status = "200 OK"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield server_state


@pytest.fixture
def ollama_lan(dns: FakeDNS) -> None:
    # A made-up LAN name: only the fake resolver knows it, so reaching the server
    # proves the connection went to the address it resolved and checked.
    dns.records["ollama.lan"] = ["127.0.0.1"]


@pytest.mark.anyio
@pytest.mark.usefixtures("ollama_lan")
async def test_it_connects_to_the_address_it_checked(dns: FakeDNS, settings: Any) -> None:
    async with tiny_server() as server:
        origin = f"http://ollama.lan:{server.port}"
        async with user_client(allowed=[origin]) as client:
            response = await client.get(f"{origin}/v1/models")

    assert response.status_code == 200
    assert server.seen == [(f"ollama.lan:{server.port}", "/v1/models")]
    assert dns.lookups == ["ollama.lan"]


@pytest.mark.anyio
@pytest.mark.usefixtures("ollama_lan")
async def test_a_vouched_name_is_still_refused_on_another_port(dns: FakeDNS, settings: Any) -> None:
    async with tiny_server() as server, user_client(allowed=["http://ollama.lan:1"]) as client:
        with pytest.raises(httpx2.ConnectError) as caught:
            await client.get(f"http://ollama.lan:{server.port}/v1/models")
    refused(caught)
    assert server.seen == []


@pytest.mark.anyio
@pytest.mark.usefixtures("ollama_lan")
async def test_it_does_not_follow_a_redirect(settings: Any) -> None:
    async with tiny_server() as server:
        origin = f"http://ollama.lan:{server.port}"
        async with user_client(allowed=[origin]) as client:
            response = await client.get(f"{origin}/redirect")

    assert response.status_code == 302
    assert response.headers["Location"] == "http://169.254.169.254/latest/meta-data/"
    assert server.seen == [(f"ollama.lan:{server.port}", "/redirect")]


@pytest.mark.anyio
@pytest.mark.usefixtures("ollama_lan")
async def test_it_refuses_a_redirect_hop_even_when_asked_to_follow(settings: Any) -> None:
    async with tiny_server() as server:
        origin = f"http://ollama.lan:{server.port}"
        async with user_client(allowed=[origin]) as client:
            with pytest.raises(httpx2.ConnectError) as caught:
                await client.get(f"{origin}/redirect", follow_redirects=True)

    refused(caught)
    assert len(server.seen) == 1
