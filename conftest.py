"""Test-wide fixtures. The network guard lives here: tests talk to loopback only."""

import ipaddress
import os
import socket
from typing import Any

import pytest


class NetworkAccessError(RuntimeError):
    pass


def _is_local(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    if host in {"localhost", "testserver"} or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        raise NetworkAccessError(f"test tried to reach {address[0]!r}: tests stay on loopback")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        raise NetworkAccessError(f"test tried to reach {address[0]!r}: tests stay on loopback")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # Resolving a public name is already traffic (DNS); refuse it too.
    if host is not None and not _is_local(host if isinstance(host, str) else host.decode()):
        raise NetworkAccessError(f"test tried to resolve {host!r}: tests stay on loopback")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]
    socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2's deliberate slowness is for production, not for every test sign-in.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    # allauth's rate limits count in the cache; one test's attempts must not
    # throttle the next.
    from django.core.cache import cache

    cache.clear()


REDIS = ("127.0.0.1", 6379)


def require_redis() -> None:
    """Skip the calling test when Redis is not on 127.0.0.1:6379; fail it in CI,
    whose machine runs Redis."""
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")


PASSWORD = "correct horse battery staple"


def make_user(email: str, *, staff: bool = False, verified: bool = True) -> Any:
    """A user who can sign in: password set, primary email (verified by default)."""
    from allauth.account.models import EmailAddress

    from accounts.models import User

    user = User.objects.create_user(
        email=email, password=PASSWORD, is_staff=staff, is_superuser=staff
    )
    EmailAddress.objects.create(user=user, email=email, primary=True, verified=verified)
    return user


@pytest.fixture
def alice(db: None) -> Any:
    return make_user("alice@example.com")


@pytest.fixture
def bob(db: None) -> Any:
    return make_user("bob@example.com")


@pytest.fixture
def staff(db: None) -> Any:
    """An operator: staff and superuser, as `make superuser` creates."""
    return make_user("staff@example.com", staff=True)


@pytest.fixture
def anyio_backend() -> str:
    # Async tests (marked anyio) run on asyncio, as uvicorn does.
    return "asyncio"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Any:
    yield
    # Connections checked out of psycopg's pool by other threads (async tests'
    # sync_to_async thread, the live server) outlive the pool's close(); end
    # them so that the test database can be dropped.
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.close()


@pytest.fixture(scope="session")
def mock_server() -> Any:
    """The mock provider server (every vendor's wire protocol) on a loopback port."""
    from devtools.mockprovider import MockProviderThread

    server = MockProviderThread().start()
    yield server
    server.stop()


@pytest.fixture
def mock_provider(mock_server: Any, settings: Any) -> Any:
    """Points every provider at the mock server, fresh for each test; returns its app
    (`.configure(...)`, `.requests`)."""
    mock_server.app.reset()
    settings.OPENAI_BASE_URL = f"{mock_server.url}/v1"
    settings.ANTHROPIC_BASE_URL = mock_server.url
    settings.GEMINI_BASE_URL = mock_server.url
    # Users' compatible base URLs may point at it, as at a LAN Ollama.
    settings.ALLOWED_PRIVATE_BASE_URLS = [mock_server.url]
    settings.PROVIDER_RETRY_BACKOFF = 0.01
    settings.DEMO_TOKEN_DELAY = 0
    return mock_server.app


@pytest.fixture
def prices(db: None) -> None:
    """The shipped price table. Migrations load it, but transactional tests flush
    the tables after themselves; load it again (it is idempotent)."""
    from pricing.models import ModelPrice
    from pricing.sources import load_fixture

    load_fixture(ModelPrice)


class LiveServer:
    """The project's ASGI application under uvicorn, on a loopback port, on an
    event loop of its own in a thread of this process: to the app, one worker
    process (streaming and disconnects behave as in production)."""

    def __init__(self) -> None:
        import threading
        import time

        import uvicorn
        from django.core.asgi import get_asgi_application

        config = uvicorn.Config(
            get_asgi_application(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def asgi_live_server(transactional_db: None) -> Any:
    """A LiveServer sharing the test database (a WSGI live server cannot show
    streaming and disconnects)."""
    server = LiveServer()
    yield server
    server.stop()


@pytest.fixture
def second_live_server(asgi_live_server: Any) -> Any:
    """Another LiveServer: a second worker process, as far as the app can tell."""
    server = LiveServer()
    yield server
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The provider clients' aiohttp sessions, one per event loop the tests made:
    # closed, rather than reported unclosed as the interpreter exits.
    import asyncio

    from providers import http

    asyncio.run(http.aclose_all())

    # SQLite leaves the WAL files of the per-run test database behind when other
    # threads still held connections; remove them.
    import os
    from pathlib import Path

    for leftover in (Path(__file__).parent / "var").glob(f"test-db-{os.getpid()}.sqlite3*"):
        leftover.unlink(missing_ok=True)
