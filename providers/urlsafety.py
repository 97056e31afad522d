"""SSRF guard for user-supplied base URLs of OpenAI-compatible servers.

Two checks, because one is not enough: `validate_base_url` refuses a bad URL when it is
saved, and `SafeAsyncTransport` checks again at connect time and pins the connection to
the address it checked, since DNS may answer differently later (rebinding).
"""

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import anyio.to_thread
import httpx2
from django.conf import settings

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Names that point inside the deployment whatever DNS says (cloud metadata services,
# mDNS, RFC 6761/8375 special-use names), caught before any lookup is made.
_BLOCKED_NAMES = frozenset({"metadata", "instance-data", "home.arpa"})
_BLOCKED_LAST_LABELS = frozenset({"localhost", "internal", "local", "localdomain"})

# The well-known NAT64 prefix maps every IPv4 address into IPv6 (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_INVALID = "This is not a valid URL."
_SCHEME = "Only http and https URLs are allowed."
_NO_HOST = "The URL must include a host name."
_USERINFO = "The URL must not contain a user name or password."
_QUERY = "The URL must not contain a query string or a fragment."
_PORT = "The port number is not valid."
_PRIVATE = "This address is on a private or reserved network and cannot be used."
_INTERNAL_NAME = "This host name is reserved for local or internal use and cannot be used."
_UNRESOLVABLE = "The host name could not be resolved."


class UnsafeURLError(ValueError):
    """A URL that must not be used. str() is generic text, safe to show a user: it never
    echoes the URL or an address it resolved to, so the check can't be used to map a
    private network."""


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without repeats.

    The single place that resolves names, so that tests can replace it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def validate_base_url(url: str, *, allowed: list[str] | None = None) -> str:
    """Check a base URL a user wants to save; return it normalized.

    `allowed` (default: settings.ALLOWED_PRIVATE_BASE_URLS) lists origins the operator
    vouches for, such as a LAN Ollama; they skip the address checks only.
    """
    normalized = url.strip().rstrip("/")
    # Checked on the text: httpx drops an empty "?" or "#", which then hides them.
    if "?" in normalized or "#" in normalized:
        raise UnsafeURLError(_QUERY)
    try:
        parsed = httpx2.URL(normalized)
    except httpx2.InvalidURL as exc:
        raise UnsafeURLError(_INVALID) from exc
    scheme, host, port = _origin(parsed)
    if parsed.userinfo:
        raise UnsafeURLError(_USERINFO)
    if (scheme, host.lower().rstrip("."), port) in _origins(_allowed(allowed)):
        return normalized
    literal = _check_host(host)
    addresses = [str(literal)] if literal is not None else _resolve(host, port)
    _check_addresses(addresses)
    return normalized


class SafeAsyncTransport(httpx2.AsyncHTTPTransport):
    """Resolves each request's host once, checks every address and connects to the first.

    Connecting to the checked address, rather than letting the connection pool resolve
    the name again, is what defeats DNS rebinding. The pool is then keyed by IP address.
    """

    def __init__(self, *, allowed: Iterable[str] | None = None, **kwargs: Any) -> None:
        # A proxy or a Unix socket would connect somewhere other than the checked address.
        if "proxy" in kwargs or "uds" in kwargs:
            raise TypeError("SafeAsyncTransport connects directly: no proxy or uds.")
        super().__init__(**kwargs)
        self._allowed = _origins(_allowed(allowed))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            scheme, host, port = _origin(request.url)
            vouched = (scheme, host.lower().rstrip("."), port) in self._allowed
            literal = _ip_literal(host) if vouched else _check_host(host)
            if literal is not None:
                addresses = [str(literal)]
            else:
                # getaddrinfo blocks; keep it off the event loop.
                addresses = await anyio.to_thread.run_sync(_resolve, host, port)
            if not vouched:
                _check_addresses(addresses)
        except UnsafeURLError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc

        headers = request.headers.copy()
        if "Host" not in headers:
            headers["Host"] = request.url.netloc.decode("ascii")
        extensions = dict(request.extensions)
        if scheme == "https" and literal is None:
            # The certificate must still be checked against the name, not the address.
            extensions["sni_hostname"] = host
        # A new request rather than an edited one: the client hands `request` back as
        # response.request, whose URL must not reveal the address.
        pinned = httpx2.Request(
            request.method,
            request.url.copy_with(host=addresses[0]),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await super().handle_async_request(pinned)


# Given a transport, AsyncClient ignores these; they belong to the transport.
_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits")
# Each would let a request bypass the checks: another transport, or redirects to
# wherever a server points (the transport would refuse a bad hop, but don't rely on it).
_CLIENT_FORBIDDEN = ("transport", "mounts", "proxy", "follow_redirects")


def safe_async_client(*, allowed: Iterable[str] | None = None, **kwargs: Any) -> httpx2.AsyncClient:
    """An AsyncClient whose every connection goes through SafeAsyncTransport."""
    forbidden = [name for name in _CLIENT_FORBIDDEN if name in kwargs]
    if forbidden:
        raise TypeError(f"safe_async_client() does not accept {', '.join(forbidden)}")
    options = {name: kwargs.pop(name) for name in _TRANSPORT_OPTIONS if name in kwargs}
    return httpx2.AsyncClient(
        transport=SafeAsyncTransport(allowed=allowed, **options),
        follow_redirects=False,
        **kwargs,
    )


def _allowed(allowed: Iterable[str] | None) -> Iterable[str]:
    if allowed is not None:
        return allowed
    return list(getattr(settings, "ALLOWED_PRIVATE_BASE_URLS", []))


def _origin(url: httpx2.URL) -> tuple[str, str, int]:
    """(scheme, host as the connection will use it, effective port) of an http(s) URL."""
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURLError(_SCHEME)
    # raw_host is what the connection pool resolves: IDNA-encoded, IPv6 without brackets.
    host = url.raw_host.decode("ascii")
    if not host.rstrip("."):
        raise UnsafeURLError(_NO_HOST)
    port = url.port if url.port is not None else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise UnsafeURLError(_PORT)
    return scheme, host, port


def _origins(urls: Iterable[str]) -> frozenset[tuple[str, str, int]]:
    origins = set()
    for url in urls:
        try:
            scheme, host, port = _origin(httpx2.URL(url.strip()))
        except (httpx2.InvalidURL, UnsafeURLError):
            continue  # A typo in the operator's list must not open anything else.
        origins.add((scheme, host.lower().rstrip("."), port))
    return frozenset(origins)


def _ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is one in any spelling the resolver accepts as a number."""
    host = host.rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton takes what getaddrinfo does and ipaddress doesn't:
        # 127.1, 0x7f.1, 0177.0.0.1, 2130706433...
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _check_host(host: str) -> IPAddress | None:
    """Refuse a non-public address literal or an internal name; return the literal if any."""
    literal = _ip_literal(host)
    if literal is not None:
        if not _is_public(literal):
            raise UnsafeURLError(_PRIVATE)
        return literal
    name = host.lower().rstrip(".")
    if (
        name in _BLOCKED_NAMES
        or name.endswith(".home.arpa")
        or name.rsplit(".", 1)[-1] in _BLOCKED_LAST_LABELS
    ):
        raise UnsafeURLError(_INTERNAL_NAME)
    return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(_UNRESOLVABLE) from exc
    if not addresses:
        raise UnsafeURLError(_UNRESOLVABLE)
    return addresses


def _check_addresses(addresses: list[str]) -> None:
    # Any one bad address is enough: which one gets used is the resolver's choice.
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise UnsafeURLError(_UNRESOLVABLE) from exc
        if not _is_public(ip):
            raise UnsafeURLError(_PRIVATE)


def _is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # A translated address reaches the IPv4 host it embeds, so that host decides.
        translated = ip.ipv4_mapped
        if translated is None and ip in _NAT64:
            translated = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if translated is not None:
            return _is_public(translated)
        # A tunnelled one (6to4, Teredo) must pass both itself and what it carries.
        carried = [ip.sixtofour] if ip.sixtofour is not None else []
        carried += ip.teredo or ()
        if not all(_is_public(v4) for v4 in carried):
            return False
    # is_global alone lets multicast and some reserved ranges through.
    return ip.is_global and not ip.is_multicast and not ip.is_reserved
