"""The production path for real: gunicorn with uvicorn workers, production
settings, collected static files. Started as a separate process on loopback."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmchat.tests.test_settings import BASE_DIR, PRODUCTION

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "ENV_FILE": "",
        **PRODUCTION,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp / "static"),
        "USE_X_FORWARDED_PROTO": "true",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
    }
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=BASE_DIR,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "llmchat.asgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                if get(port, "/health").status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start: " + (tmp / "server.log").read_text())
        yield port, tmp / "server.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_health_answers_over_plain_http_by_ip(server: tuple[int, Path]) -> None:
    port, _ = server
    response = get(port, "/health")
    assert response.status == 200
    assert json.loads(response.body) == {  # type: ignore[attr-defined]
        "status": "ok",
        "database": "ok",
        "cache": "ok",
    }


def test_pages_redirect_to_https(server: tuple[int, Path]) -> None:
    port, _ = server
    response = get(port, "/accounts/login/", {"Host": "chat.example.com"})
    assert response.status == 301
    assert response.headers["Location"] == "https://chat.example.com/accounts/login/"


def test_unknown_hosts_are_refused(server: tuple[int, Path]) -> None:
    port, _ = server
    response = get(port, "/accounts/login/", {"Host": "evil.example.net"})
    assert response.status == 400


def test_pages_are_served_with_production_headers_and_static_files(
    server: tuple[int, Path],
) -> None:
    port, _ = server
    https = {"Host": "chat.example.com", "X-Forwarded-Proto": "https"}
    page = get(port, "/accounts/login/", https)
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()  # type: ignore[attr-defined]
    # Manifest storage: the stylesheet's name carries its content hash.
    start = html.index("/static/css/site.")
    css_path = html[start : html.index('"', start)]
    assert css_path != "/static/css/site.css"
    css = get(port, css_path, {**https, "Accept-Encoding": "gzip"})
    assert css.status == 200
    assert css.headers["Content-Encoding"] == "gzip"
    assert "max-age=315360000" in css.headers["Cache-Control"]


def test_it_logs_json_lines_with_request_ids(server: tuple[int, Path]) -> None:
    port, log = server
    response = get(port, "/health", {"X-Request-ID": "probe-00000001"})
    assert response.headers["X-Request-ID"] == "probe-00000001"
    for _ in range(50):
        entries = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and "llmchat.request" in line
        ]
        if any(e["request_id"] == "probe-00000001" for e in entries):
            break
        time.sleep(0.1)
    entry = next(e for e in entries if e["request_id"] == "probe-00000001")
    assert entry["path"] == "/health"
    assert entry["status"] == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_chat_request_gives_its_database_connection_back_before_the_reply_streams(
    alice: Any, mock_provider: Any, monkeypatch: Any
) -> None:
    # A reply streams for seconds to minutes; holding the request's connection
    # for all of it would cap open replies at the pool's size.
    from asgiref.sync import sync_to_async
    from django.db import connections
    from django.test import AsyncClient

    from conversations import turns
    from providers import keys

    await sync_to_async(keys.provider_key_save)(
        user=alice, provider="openai", key="sk-test-0000000000000000"
    )
    mock_provider.configure(reply_tokens=200, tokens_per_second=100)
    request_connections: list[Any] = []
    real_start = turns.chat_start

    def chat_start(**kwargs: Any) -> Any:
        request_connections.append(connections["default"])  # this thread's
        return real_start(**kwargs)

    monkeypatch.setattr(turns, "chat_start", chat_start)
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    body = {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Hi"}
    response = await client.post("/api/chat", body, content_type="application/json")
    chunks = aiter(response.streaming_content)  # type: ignore[attr-defined]
    assert b"event: start" in await anext(chunks)
    assert request_connections[0].connection is None  # closed: back to the pool
    async for _ in chunks:  # the reply goes on to its end all the same
        pass


def test_a_worker_hides_what_it_loaded_at_start_from_the_garbage_collector() -> None:
    # gunicorn's post_worker_init hook, in a process of its own (it changes the GC).
    # The app is loaded before the hook runs (gunicorn's load_wsgi); stand-in: 50,000
    # tracked objects made first, then a cycle of garbage, which must not be frozen.
    code = """
import gc, runpy, weakref
hooks = runpy.run_path("gunicorn.conf.py")
loaded = [[] for _ in range(50_000)]
class Cycle: pass
c = Cycle(); c.me = c; garbage = weakref.ref(c); del c
before = gc.get_freeze_count()
hooks["post_worker_init"](None)
print(before, gc.get_freeze_count(), garbage() is None)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    before, frozen, garbage_collected = out.stdout.split()
    assert int(before) == 0
    assert int(frozen) > 50_000  # what was loaded is out of the collector's sight
    assert garbage_collected == "True"  # collected first, not frozen for the worker's life
