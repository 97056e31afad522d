"""SSRF guard for user-supplied base URLs of OpenAI-compatible servers.

Checked when saved, and again on every connection, because DNS may answer
differently later (rebinding): `validate_base_url` refuses a bad URL when it is
saved; at request time `GuardedTransport` refuses a host that is an internal
address (in any spelling) or name, and the resolver of those connections
(providers.resolver, aiohttp's) checks every address a name resolves to before
the connector may use one (`checked_addresses`) — so a connection goes to an
address that was checked.
"""

import ipaddress
import socket
from collections.abc import Iterable

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


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Users' URLs, before any connection: the request's host refused if it is an
    internal address in any spelling the resolver would take (127.1, 0x7f.1,
    2130706433...) or an internal name, unless the operator vouched for the origin
    (ALLOWED_PRIVATE_BASE_URLS). Names are checked as they resolve: `inner`'s
    connector must resolve through GuardedResolver."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, allowed: Iterable[str]) -> None:
        self.inner = inner
        self._allowed = _origins(allowed)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            scheme, host, port = _origin(request.url)
            if (scheme, host.lower().rstrip("."), port) not in self._allowed:
                _check_host(host)
            # The name's addresses are checked as they resolve (providers.resolver).
            return await self.inner.handle_async_request(request)
        except UnsafeURLError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


def checked_addresses(host: str, port: int, *, allowed: Iterable[str]) -> list[str]:
    """Every address `host` resolves to, each checked (one private address refuses
    the name: which one gets used is the connector's choice), unless the
    operator vouched for the host and port; UnsafeURLError otherwise. Blocks:
    run it in a thread."""
    addresses = _resolve(host, port)
    vouched = {(h, p) for _, h, p in _origins(allowed)}
    if (host.lower().rstrip("."), port) not in vouched:
        _check_addresses(addresses)
    return addresses


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
