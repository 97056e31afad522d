"""Load and fault benchmark for POST /api/chat (Server-Sent Events over ASGI).

    .venv/bin/python bench/chat_load.py                  # quick sweep: 1,50,200 users x 10 s
    .venv/bin/python bench/chat_load.py --full           # 1,50,200,1000 users x 20 s
    .venv/bin/python bench/chat_load.py --users 1000 --duration 30
    .venv/bin/python bench/chat_load.py --faults         # fault injection + database checks

Starts, on free loopback ports, the mock provider (`python -m devtools.mockprovider`) and the
app under production settings (`gunicorn llmchat.asgi:application`, which reads
gunicorn.conf.py; WEB_CONCURRENCY workers, default 2), against PostgreSQL
(--database-url, default postgres://postgres@127.0.0.1:5432/llmchat_bench, created
and migrated if needed). `--target URL` uses an app that is already running instead
(then SECRET_KEY and DATABASE_URL must be the app's, and --mock-url the mock it
talks to).

Users: N accounts "load-<i>@chat-load.invalid" with a verified address and an
OpenAI key, made directly in the database by a Django-setup'd subprocess, which
also creates a Django session for each (SessionStore with the auth keys) and
hands the cookies to the clients: no sign-in over HTTP (that would time
password hashing, not chat). Earlier runs' conversations of these users are
deleted first. CSRF: each client sends a random secret as both the csrftoken
cookie and the X-CSRFToken header, which is what Django checks over plain HTTP.

For each concurrency level, for --duration seconds, every virtual user loops
(no think time unless --think): POST /api/chat (openai / gpt-4o, a new
conversation every --turns-per-conversation turns, else continuing its own) and
reads the stream to the end over its own keep-alive connection (a small asyncio +
httptools client: the load generator shares the machine, so it spends little CPU
per read). Users start spread over one reply's time (--stagger), and the level is
measured from then on, for --duration seconds (errors count from the start). Per turn: time to
the first `delta`, time to the end, errors (HTTP >= 400, `event: error`, a
broken stream). "Added TTFT" subtracts the mock's configured TTFT; "own" subtracts
what the mock measured for that turn (each message carries a marker, and the mock
records its own time from the request to the first token under it). Server CPU
(user+sys of the gunicorn master and workers, from /proc) and RSS are measured
over each level; CPU per turn = CPU seconds / finished turns. The same load
straight against the mock's /v1/responses stream is the zero-overhead baseline.

`--faults`: the mock injects 5% 429, 2% 500, 1% cut and 1% stall (stall 8 s,
PROVIDER_FIRST_TOKEN_TIMEOUT=5 in the app), and 2% of turns disconnect mid-stream;
afterwards the database is checked (user messages saved, nothing left
"generating", ledger rows and tokens) and PASS/FAIL lines are printed.

It prints numbers and never fails on timing: the exit status is 0 unless the
harness itself crashed. JSON results go to bench/results/chat_load-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import resource
import secrets
import signal
import socket
import ssl
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx2

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
DOMAIN = "@chat-load.invalid"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/llmchat_bench"
QUICK_USERS = "1,50,200"
FULL_USERS = "1,50,200,1000"
FAULT_USERS = "50,200"
FAULT_RATES = {"429": 0.05, "500": 0.02, "cut": 0.01, "stall": 0.01}
DISCONNECT_RATE = 0.02
STALL_SECONDS = 8.0
FAULT_FIRST_TOKEN_TIMEOUT = 5
TURN_TIMEOUT = 120.0  # seconds; a turn still open then is a broken stream
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = [
    "added TTFT p50 <= 10 ms and p99 <= 50 ms at 200 streams",
    ">= 1000 concurrent streams with 0 errors",
    "CPU per chat turn <= 15 ms",
]


# --- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def base_env(args: argparse.Namespace, mock_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "llmchat.settings",
            "ENV_FILE": "",
            "DEBUG": "false",
            "SECRET_KEY": args.secret_key,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": args.database_url,
            "OPENAI_BASE_URL": f"{mock_url}/v1",
            "ANTHROPIC_BASE_URL": mock_url,
            "GEMINI_BASE_URL": mock_url,
            "ALLOWED_PRIVATE_BASE_URLS": mock_url,
            "CHAT_RATE_LIMIT": "",
            "CHAT_MAX_CONCURRENT_STREAMS": "1000",
            "LOG_LEVEL": "WARNING",
            "WEB_CONCURRENCY": str(args.workers),
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.faults:
        env["PROVIDER_FIRST_TOKEN_TIMEOUT"] = str(FAULT_FIRST_TOKEN_TIMEOUT)
    for item in args.app_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    name = str(conninfo.get("dbname") or "")
    if not name:
        return
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


CHURNED_TABLES = (
    "conversations_message",
    "conversations_conversation",
    "conversations_usagerecord",
    "django_session",
)


def vacuum(url: str) -> None:
    """VACUUM ANALYZE the tables a level churns (each turn updates its
    conversation twice and its reply several times; each run deletes the last
    one's rows). A production server's autovacuum does this in the background;
    a test machine's PostgreSQL may run without it (one had autovacuum = off
    and, after an hour of runs, 44,000 dead rows in a 410-row message table),
    and the dead rows then slow every later level and run."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        tables = sql.SQL(", ").join(sql.Identifier(t) for t in CHURNED_TABLES)
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(tables))


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx2.get(url, timeout=1).status_code < 500:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def start_mock(
    args: argparse.Namespace, env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        PYTHON,
        "-m",
        "devtools.mockprovider",
        "--port",
        str(port),
        "--ttft",
        str(args.ttft),
        "--tokens-per-second",
        str(args.tokens_per_second),
        "--reply-tokens",
        str(args.reply_tokens),
        "--write-interval",
        str(args.write_interval),
        "--seed",
        str(args.seed),
    ]
    if args.faults:
        for fault, rate in FAULT_RATES.items():
            cmd += ["--fault-rate", f"{fault}={rate}"]
    # uvicorn would read WEB_CONCURRENCY as its worker count (the app's setting).
    env = {k: v for k, v in env.items() if k != "WEB_CONCURRENCY"}
    # Its "cut" fault logs a traceback per dropped connection: to the log file.
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)  # noqa: S603
    wait_http(f"http://127.0.0.1:{port}/_mock/nothing", proc=proc)
    return proc


def start_app(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**env, "BIND": f"127.0.0.1:{port}"}
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own command line
            [GUNICORN, "llmchat.asgi:application"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
    return proc


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- /proc sampling -------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """root and its descendants (gunicorn master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """user+sys CPU of the processes (their own, not of reaped children)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * PAGE / 1e6


class ServerMeter:
    """CPU and peak RSS of a process tree over one level."""

    def __init__(self, root: int | None) -> None:
        self.root = root
        self.peak_rss = 0.0
        self._cpu0 = 0.0
        self._task: asyncio.Task[None] | None = None

    def pids(self) -> list[int]:
        return process_tree(self.root) if self.root else []

    async def __aenter__(self) -> ServerMeter:
        self._cpu0 = cpu_seconds(self.pids())
        self.peak_rss = rss_mb(self.pids())
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.peak_rss = max(self.peak_rss, rss_mb(self.pids()))

    def restart(self) -> None:
        """Count CPU from now on (after the users' ramp)."""
        self._cpu0 = cpu_seconds(self.pids())

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        self.cpu = cpu_seconds(self.pids()) - self._cpu0


# --- users and sessions -------------------------------------------------------------


def setup_users_in_django(count: int, out: Path) -> None:
    """Runs in a subprocess with the app's environment (see --_setup-users)."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from allauth.account.models import EmailAddress
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User
    from conversations.models import Conversation, UsageRecord
    from providers import keys

    ours = rf"^load-[0-9]+{re.escape(DOMAIN)}$"
    users = list(User.objects.filter(email__regex=ours).order_by("id"))
    have = {u.email for u in users}
    for i in range(count):
        email = f"load-{i}{DOMAIN}"
        if email in have:
            continue
        user = User.objects.create_user(email=email, password=None)
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
        users.append(user)
    # Every earlier run's data goes, so that the fault checks see this run only.
    Conversation.objects.filter(user__email__endswith=DOMAIN).delete()
    UsageRecord.objects.filter(user_email__endswith=DOMAIN).delete()
    users = sorted(users, key=lambda u: int(u.email.split("-", 1)[1].split("@")[0]))[:count]
    sessions = []
    for user in users:
        # Saved again every run: it is encrypted with this run's SECRET_KEY.
        keys.provider_key_save(user=user, provider="openai", key=f"sk-load-{user.pk:024d}")
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        sessions.append({"user": user.pk, "session": store.session_key})
    out.write_text(json.dumps(sessions))


def make_sessions(env: dict[str, str], count: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sessions.json"
        subprocess.run(  # noqa: S603 - our own command line
            [PYTHON, __file__, "--_setup-users", str(count), "--_out", str(out)],
            cwd=ROOT,
            env=env,
            check=True,
        )
        sessions: list[dict[str, Any]] = json.loads(out.read_text())
    return sessions


# --- the load -------------------------------------------------------------------


@dataclasses.dataclass
class TurnResult:
    started: float
    ttft: float | None = None
    total: float | None = None
    status: int = 0
    error: str = ""  # "" for a good turn
    disconnected: bool = False
    start_event: dict[str, Any] | None = None
    final: dict[str, Any] | None = None  # the done/error event's data
    final_event: str = ""
    ended: float | None = None  # when the turn ended, however it ended
    # In the message; the mock records its own time to first token under it.
    marker: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))


def csrf_secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


class SseReader:
    """Splits a Server-Sent Events body into lines as it arrives and records, on the
    turn, the first delta, the `start` event and the final event."""

    def __init__(self, result: TurnResult, t0: float, delta_events: set[str], stop_at: int):
        self.result, self.t0, self.delta_events, self.stop_at = result, t0, delta_events, stop_at
        self.event = ""
        self.deltas = 0
        self.rest = b""

    def feed(self, chunk: bytes) -> bool:
        """False once the client should leave (a disconnecting user's turn)."""
        lines = (self.rest + chunk).split(b"\n")
        self.rest = lines.pop()
        result = self.result
        for raw in lines:
            line = raw.removesuffix(b"\r").decode()
            if line.startswith("event: "):
                self.event = line[7:]
            elif line.startswith("data: "):
                data, event = line[6:], self.event
                if event in self.delta_events or (
                    not event and '"response.output_text.delta"' in data
                ):
                    self.deltas += 1
                    if result.ttft is None:
                        result.ttft = time.perf_counter() - self.t0
                    if self.stop_at and self.deltas >= self.stop_at:
                        result.disconnected = True
                        return False
                elif event == "start":
                    result.start_event = json.loads(data)
                elif event in {"done", "error"}:
                    result.final_event = event
                    result.final = json.loads(data)
                elif event == "response.completed":
                    result.final_event = "done"
            elif not line:
                self.event = ""
        return True


class ConnectionClosed(OSError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the answer's status, if its head had come


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: asyncio and httptools, one request at a
    time. The load generator shares the machine with the server it measures, so a
    read must cost it little: each arriving packet is one callback that parses the
    stream in place (httpx2 costs several times more per read)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.sink: Any = None  # callable(bytes) -> bool, or None to collect the body
        self.body: list[bytes] = []
        self.status = 0
        self.keep_alive = False
        self.closed = False

    # asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionClosed(f"bad response: {exc}", self.status))
        except Exception as exc:  # the sink's own (bad JSON...): that turn's error
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionClosed("connection closed", self.status))

    # httptools
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.done is None or self.done.done():
            return  # the turn already ended (a client that left)
        if self.sink is not None and self.status < 400:
            if not self.sink(body):
                self.close()
                self.done.set_result(None)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.keep_alive:
            self.close()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, body: bytes, sink: Any) -> tuple[int, bytes]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.sink, self.body, self.status = sink, [], 0
        self.transport.write(head + body)
        await self.done
        return self.status, b"".join(self.body)


class Client:
    """A virtual user's browser tab: one keep-alive connection, opened again when the
    server closed it. A request is never sent twice (a chat turn is not idempotent):
    a connection that fails is that turn's error."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.prefix = url.path.rstrip("/")
        host = url.netloc.rsplit("@", 1)[-1]
        self.headers = f"Host: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.conn: HttpConnection | None = None

    async def post(
        self, path: str, payload: Any, headers: dict[str, str], sink: Any
    ) -> tuple[int, bytes]:
        """POST JSON; a good answer's body goes to `sink` as it arrives, an error's
        (status >= 400) is returned."""
        body = json.dumps(payload).encode()
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self.headers}"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn: HttpConnection | None = self.conn
        if conn is None or conn.closed or conn.transport is None or conn.transport.is_closing():
            _, conn = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    HttpConnection, self.host, self.port, ssl=self.ssl
                ),
                30,
            )
            self.conn = conn
        assert conn is not None
        try:
            return await asyncio.wait_for(conn.request(head, body, sink), TURN_TIMEOUT)
        except BaseException:
            conn.close()  # mid-answer (an error, a timeout, the drain's cancel): unusable
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class VirtualUser:
    def __init__(
        self, base_url: str, session: dict[str, Any] | None, args: argparse.Namespace, n: int
    ) -> None:
        self.args = args
        self.session = session
        self.rng = random.Random(args.seed * 100_003 + n)  # noqa: S311 - load shape only
        headers = {}
        if session is not None:
            secret = csrf_secret()
            headers = {
                "Cookie": f"sessionid={session['session']}; csrftoken={secret}",
                "X-CSRFToken": secret,
            }
        self.client = Client(base_url, headers)
        self.conversation: int | None = None
        self.turns_here = 0
        self.results: list[TurnResult] = []

    async def run(self, deadline: float, baseline: bool) -> None:
        # Users arrive spread over one reply's time, not all in the same instant:
        # with equal replies they would otherwise stay in step, every turn of all
        # of them starting at once.
        if self.args.stagger:
            await asyncio.sleep(self.rng.uniform(0, self.args.stagger))
        while time.perf_counter() < deadline:
            # Recorded before it runs: a turn cancelled at the end of the drain counts too.
            result = TurnResult(started=time.perf_counter())
            self.results.append(result)
            try:
                await (self.baseline_turn(result) if baseline else self.chat_turn(result))
            except asyncio.CancelledError:
                result.error, result.disconnected = "cancelled_after_drain", True
                raise
            finally:
                result.ended = time.perf_counter()
            if self.args.think:
                await asyncio.sleep(self.args.think)

    async def _post(
        self,
        result: TurnResult,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        reader: SseReader,
    ) -> bytes:
        """One turn's request, its stream read into `reader`. The status, or the
        failure, goes on `result`; an error answer's body (status >= 400) is returned."""
        try:
            status, error_body = await self.client.post(path, body, headers, reader.feed)
        except Exception as exc:  # a broken connection, a timeout, a bad event
            result.status = getattr(exc, "status", 0)
            result.error = f"exception:{type(exc).__name__}"
            return b""
        result.status = status
        if status >= 400:
            result.error = f"http_{status}"
        return error_body

    async def chat_turn(self, result: TurnResult) -> TurnResult:
        args = self.args
        if self.turns_here >= args.turns_per_conversation:
            self.conversation, self.turns_here = None, 0
        body = {
            "conversation": self.conversation,
            "provider": "openai",
            "model": "gpt-4o",
            "message": f"Tell me about load number {self.rng.randrange(10**6)} "
            f"please [turn {result.marker}]",
            # As the browser sends it (static/js/chat.js): the server's guard
            # against a retried message being answered twice is on this path.
            "client_message_id": str(uuid.uuid4()),
        }
        stop_at = 0
        if args.faults and self.rng.random() < DISCONNECT_RATE:
            stop_at = self.rng.randint(1, max(1, args.reply_tokens // 2))
        t0 = result.started = time.perf_counter()
        reader = SseReader(result, t0, {"delta"}, stop_at)
        error_body = await self._post(result, "/api/chat", body, {}, reader)
        if result.error:
            if result.error.startswith("http_"):  # an error answer, not a failure
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    result.error += f":{json.loads(error_body)['error']['code']}"
                if result.status == 409:
                    self.conversation, self.turns_here = None, 0
            return result
        result.total = time.perf_counter() - t0
        if result.start_event:
            self.conversation = result.start_event.get("conversation")
            self.turns_here += 1
        if result.disconnected:
            self.conversation, self.turns_here = None, 0  # its reply may still be saving
        elif result.final_event == "error":
            code = (result.final or {}).get("code", "?")
            result.error = f"event_error:{code}"
        elif result.final_event != "done":
            result.error = "stream_ended_early"
        return result

    async def baseline_turn(self, result: TurnResult) -> TurnResult:
        body = {
            "model": "gpt-4o",
            "stream": True,
            "input": [
                {
                    "role": "user",
                    "content": f"Tell me about load number {self.rng.randrange(10**6)} "
                    f"please [turn {result.marker}]",
                }
            ],
        }
        t0 = result.started = time.perf_counter()
        reader = SseReader(result, t0, {"response.output_text.delta"}, 0)
        headers = {"Authorization": "Bearer sk-baseline-0000000000"}
        await self._post(result, "/v1/responses", body, headers, reader)
        if result.error:
            return result
        result.total = time.perf_counter() - t0
        if result.final_event != "done":
            result.error = "stream_ended_early"
        return result


def mock_first_tokens(url: str) -> dict[str, float]:
    """The mock's own time to first token, in seconds, by turn marker."""
    try:
        return dict(httpx2.get(url, timeout=30).json())
    except (httpx2.HTTPError, ValueError):
        return {}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def streaming_at_once(results: list[TurnResult], start: float, end: float) -> tuple[float, int]:
    """Replies streaming at once over [start, end] (from their first delta to their
    end): the time average and the peak. Users are only open requests; a request
    still queued for its first token is not a stream yet."""
    spans = [
        (max(r.started + r.ttft, start), min(r.ended, end))
        for r in results
        if r.ttft is not None and r.ended is not None
    ]
    spans = [(a, b) for a, b in spans if b > a]
    if not spans or end <= start:
        return 0.0, 0
    mean = sum(b - a for a, b in spans) / (end - start)
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return mean, peak


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def run_level(
    base_url: str,
    sessions: list[dict[str, Any]] | None,
    users: int,
    args: argparse.Namespace,
    server_root: int | None,
    baseline: bool,
) -> tuple[dict[str, Any], list[TurnResult]]:
    vus = [VirtualUser(base_url, sessions[i] if sessions else None, args, i) for i in range(users)]
    # Users arrive over the first `stagger` seconds; the level is measured after that,
    # for `duration` seconds, with all of them at work. Errors count from the start.
    ramp = args.stagger or 0.0
    async with ServerMeter(server_root) as meter:
        t0 = time.perf_counter()
        measured_from = t0 + ramp
        deadline = measured_from + args.duration
        tasks = [asyncio.create_task(vu.run(deadline, baseline)) for vu in vus]
        await asyncio.sleep(ramp)
        meter.restart()
        own0 = time.process_time()
        # Turns in flight at the deadline finish (bounded), none start after it.
        _, pending = await asyncio.wait(tasks, timeout=args.duration + args.drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - measured_from
    own_cpu = time.process_time() - own0
    for vu in vus:
        vu.client.close()
    everything = [r for vu in vus for r in vu.results]
    results = [r for r in everything if r.started >= measured_from]
    streams_mean, streams_peak = streaming_at_once(everything, measured_from, deadline)
    good = [r for r in results if not r.error and not r.disconnected]
    ttfts = [r.ttft for r in good if r.ttft is not None]
    totals = [r.total for r in good if r.total is not None]
    added = [t - args.ttft for t in ttfts]
    # The "minus the provider's own": what the mock measured for that very
    # turn, from the request received to the first token sent (its lateness under
    # load included), not the configured TTFT.
    own_ttft = await asyncio.to_thread(mock_first_tokens, args.mock_first_tokens_url)
    added_own = [r.ttft - own_ttft[r.marker] for r in good if r.ttft and r.marker in own_ttft]
    errors: dict[str, int] = {}
    for r in everything:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    finished = len([r for r in results if r.total is not None or r.status >= 400])
    # For CPU per turn: the turns that ended while the CPU was counted, the ramp's
    # included (at 1000 users most of them are still queued when the window opens).
    served = len(
        [
            r
            for r in everything
            if (r.total is not None or r.status >= 400) and (r.ended or 0) >= measured_from
        ]
    )
    row = {
        "target": "mock (baseline)" if baseline else "app",
        "users": users,
        "turns": len(results),
        "ramp_turns": len(everything) - len(results),
        "ok": len(good),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "disconnects": len([r for r in results if r.disconnected]),
        "unfinished_cancelled": len(pending),
        "ttft_p50_ms": ms(pct(ttfts, 50)),
        "ttft_p99_ms": ms(pct(ttfts, 99)),
        "added_ttft_p50_ms": ms(pct(added, 50)),
        "added_ttft_p99_ms": ms(pct(added, 99)),
        "added_own_ttft_p50_ms": ms(pct(added_own, 50)),
        "added_own_ttft_p99_ms": ms(pct(added_own, 99)),
        "own_ttft_turns": len(added_own),
        "full_p50_ms": ms(pct(totals, 50)),
        "full_p99_ms": ms(pct(totals, 99)),
        "mean_full_ms": ms(statistics.fmean(totals)) if totals else None,
        # Turns started in the window (and finished, during the drain at the latest).
        "turns_per_s": round(finished / args.duration, 1) if args.duration else None,
        "streaming_mean": round(streams_mean, 1),
        "streaming_peak": streams_peak,
        "elapsed_s": round(elapsed, 1),
        "server_cpu_s": round(meter.cpu, 2) if server_root else None,
        "cpu_ms_per_turn": round(meter.cpu * 1000 / served, 2) if server_root and served else None,
        "server_cpu_util_cores": round(meter.cpu / elapsed, 2) if server_root else None,
        "peak_rss_mb": round(meter.peak_rss, 1) if server_root else None,
        "loadgen_cpu_s": round(own_cpu, 2),
    }
    return row, everything


# --- fault checks ---------------------------------------------------------------------


def fault_checks(
    database_url: str, results: list[TurnResult], reply_tokens: int, settle: float
) -> list[dict[str, Any]]:
    import psycopg

    started = [r for r in results if r.start_event]
    user_ids = {r.start_event["user_message"] for r in started if r.start_event}
    assistant_ids = {r.start_event["message"] for r in started if r.start_event}
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    # The benchmark users' conversations.
    mine = (
        "conversation_id IN (SELECT c.id FROM conversations_conversation c "
        "JOIN accounts_user u ON u.id = c.user_id WHERE u.email LIKE %s)"
    )
    like = f"%{DOMAIN}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + settle
        while True:
            generating = conn.execute(
                "SELECT count(*) FROM conversations_message "  # noqa: S608 - constants only
                f"WHERE status = 'generating' AND {mine}",
                (like,),
            ).fetchone()
            if not generating or generating[0] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        saved_users = {
            row[0]
            for row in conn.execute(
                f"SELECT id FROM conversations_message WHERE role = 'user' AND {mine}",  # noqa: S608
                (like,),
            )
        }
        messages = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT id, status, input_tokens, output_tokens "  # noqa: S608 - constants only
                f"FROM conversations_message WHERE role = 'assistant' AND {mine}",
                (like,),
            )
        }
        ledger: dict[int, list[tuple[Any, ...]]] = {}
        for row in conn.execute(
            "SELECT r.message_id, r.outcome, r.input_tokens, r.output_tokens "
            "FROM conversations_usagerecord r JOIN accounts_user u ON u.id = r.user_id "
            "WHERE u.email LIKE %s",
            (like,),
        ):
            ledger.setdefault(row[0], []).append(row[1:])

    missing = user_ids - saved_users
    check(
        "every started turn's user message is saved",
        not missing and len(saved_users) == len(user_ids),
        f"{len(user_ids)} started, {len(saved_users)} saved, {len(missing)} missing",
    )
    gen = [m for m, v in messages.items() if v[0] == "generating"]
    check("no assistant message left generating", not gen, f"{len(gen)} generating: {gen[:10]}")
    statuses: dict[str, int] = {}
    for v in messages.values():
        statuses[v[0]] = statuses.get(v[0], 0) + 1
    lost = assistant_ids - set(messages)
    check(
        "every started reply exists with a final status",
        not lost and set(statuses) <= {"complete", "partial", "error", "stopped"},
        f"statuses {statuses}, {len(lost)} missing",
    )
    served_5xx = [r.status for r in results if r.status >= 500]
    check("no HTTP 5xx served", not served_5xx, f"{len(served_5xx)} responses >= 500")
    exc = [r.error for r in results if r.error.startswith(("exception", "stream_ended"))]
    check(
        "every stream ended with done or error (none broken)",
        not exc,
        f"{len(exc)} broken: {sorted(set(exc))[:5]}",
    )
    bad_ledger = []
    for r in started:
        if r.final_event != "done" or not r.final:
            continue
        rows = ledger.get(r.final["id"], [])
        want = ("complete", r.final["input_tokens"], r.final["output_tokens"])
        if rows != [want] or r.final["output_tokens"] != reply_tokens:
            bad_ledger.append((r.final["id"], rows, want))
    check(
        "complete turns: ledger tokens == done event tokens == mock's reply",
        not bad_ledger,
        f"{len([r for r in started if r.final_event == 'done'])} complete, "
        f"{len(bad_ledger)} mismatches {bad_ledger[:3]}",
    )
    no_row = [
        m
        for m, v in messages.items()
        if v[0] != "generating" and [row[0] for row in ledger.get(m, [])] != [v[0]]
    ]
    check(
        "every final reply has exactly one ledger row with its outcome",
        not no_row,
        f"{len(no_row)} without (or with extra) rows: {no_row[:10]}",
    )
    mism = [m for m, v in messages.items() if ledger.get(m) and ledger[m][0][1:] != v[1:]]
    check("ledger tokens == message tokens", not mism, f"{len(mism)} mismatches")
    return checks


# --- main -------------------------------------------------------------------------


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("target", "target", 16),
        ("users", "conc", 5),
        ("turns", "turns", 6),
        ("errors", "errors", 6),
        ("ttft_p50_ms", "TTFT p50", 9),
        ("ttft_p99_ms", "TTFT p99", 9),
        ("added_ttft_p50_ms", "add p50", 8),
        ("added_ttft_p99_ms", "add p99", 8),
        ("added_own_ttft_p50_ms", "own p50", 8),
        ("added_own_ttft_p99_ms", "own p99", 8),
        ("full_p50_ms", "full p50", 9),
        ("full_p99_ms", "full p99", 9),
        ("turns_per_s", "turns/s", 8),
        ("streaming_mean", "streams", 8),
        ("streaming_peak", "peak", 5),
        ("cpu_ms_per_turn", "CPU ms/t", 9),
        ("peak_rss_mb", "RSS MB", 7),
    ]
    print(" ".join(f"{title:>{width}}" for _, title, width in cols))
    for row in rows:
        print(" ".join(f"{fmt(row.get(key)):>{width}}" for key, _, width in cols))
    print(
        "(times in ms; 'add' = client TTFT minus the mock's configured TTFT; 'own' = "
        "client TTFT minus the mock's own, measured for that turn; 'streams' = replies "
        "streaming at once, first delta to end, mean over the level; 'peak' = most)"
    )


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {r["users"]: r for r in rows if r["target"] != "app"}
    out = []
    for r in rows:
        b = base.get(r["users"])
        if r["target"] != "app" or b is None:
            continue
        entry: dict[str, Any] = {"users": r["users"]}
        for key in ("ttft_p50_ms", "ttft_p99_ms", "full_p50_ms", "full_p99_ms"):
            if r.get(key) and b.get(key):
                entry[key] = round(r[key] / b[key], 2)
        out.append(entry)
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    return {"nproc": os.cpu_count(), "cpu": model, "mem": mem, "python": sys.version.split()[0]}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    gitignore = RESULTS / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("*\n!.gitignore\n")
    levels = [int(x) for x in args.users.split(",") if x.strip()]
    mock_proc = app_proc = None
    mock_url = args.mock_url
    if not mock_url:
        mock_url = f"http://127.0.0.1:{free_port()}"
    args.mock_first_tokens_url = f"{mock_url}/_mock/first-tokens"
    env = base_env(args, mock_url)
    log = RESULTS / "chat_load-server.log"
    mock_log = RESULTS / "chat_load-mock.log"
    for path in (log, mock_log):
        path.unlink(missing_ok=True)
    try:
        if not args.mock_url:
            mock_proc = start_mock(args, env, int(mock_url.rsplit(":", 1)[1]), mock_log)
        cfg = httpx2.post(f"{mock_url}/_mock/config", json={}, timeout=5).json()
        if args.faults:
            cfg = httpx2.post(
                f"{mock_url}/_mock/config", json={"stall_seconds": STALL_SECONDS}, timeout=5
            ).json()
        args.ttft = cfg["ttft"]
        args.reply_tokens = cfg["reply_tokens"]
        if args.stagger is None:
            speed = cfg["tokens_per_second"]
            args.stagger = cfg["ttft"] + (args.reply_tokens / speed if speed else 0.0)
        print(
            f"mock {mock_url}: ttft {cfg['ttft']} s, {cfg['tokens_per_second']} tok/s, "
            f"{cfg['reply_tokens']} tokens, written every {cfg['write_interval']} s, "
            f"faults {cfg['fault_rates'] or 'none'}"
        )
        ensure_database(args.database_url)
        if args.target:
            app_url = args.target.rstrip("/")
            server_root = args.server_pid
        else:
            subprocess.run(  # noqa: S603, ASYNC221 - before any load runs
                [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
            )
            app_port = free_port()
            app_url = f"http://127.0.0.1:{app_port}"
            app_proc = start_app(env, app_port, log)
            server_root = app_proc.pid
            print(f"app {app_url}: gunicorn pid {server_root}, {args.workers} workers")
        t = time.perf_counter()
        sessions = make_sessions(env, max(levels))
        print(f"{len(sessions)} users with sessions in {time.perf_counter() - t:.1f} s")

        rows: list[dict[str, Any]] = []
        all_results: list[TurnResult] = []
        if args.warmup:
            # Each worker's first turns import the SDKs and fill the DB pool: not measured.
            warm = argparse.Namespace(
                **{**vars(args), "duration": args.warmup, "faults": False, "stagger": 0}
            )
            row, warm_results = await run_level(
                app_url, sessions, min(10, len(sessions)), warm, None, False
            )
            print(f"warm-up: {row['turns']} turns, {row['errors']} errors (not counted)")
            all_results.extend(warm_results)  # for the fault checks only
        for users in levels:
            vacuum(args.database_url)
            if not args.faults and not args.no_baseline:
                row, _ = await run_level(mock_url, None, users, args, None, baseline=True)
                rows.append(row)
                print(f"  baseline {users:>5} users: {row['turns']} turns, {row['errors']} errors")
            row, results = await run_level(app_url, sessions, users, args, server_root, False)
            rows.append(row)
            all_results.extend(results)
            print(
                f"  app      {users:>5} users: {row['turns']} turns, {row['errors']} errors "
                f"{row['error_kinds'] or ''}"
            )
            await asyncio.sleep(1)  # let stopped turns finish saving
        print()
        print_table(rows)
        rat = ratios(rows)
        if rat:
            print("\napp / baseline ratios:")
            for entry in rat:
                print("  " + ", ".join(f"{k} {v}" for k, v in entry.items()))
        print("\ntargets (from the issue):")
        for target in TARGETS:
            print(f"  - {target}")
        checks: list[dict[str, Any]] = []
        if args.faults:
            print("\nfault checks:")
            checks = fault_checks(args.database_url, all_results, args.reply_tokens, settle=15)
            for c in checks:
                print(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['check']}  ({c['detail']})")
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "config": {
                k: v for k, v in vars(args).items() if not k.startswith("_") and k != "secret_key"
            },
            "mock": cfg,
            "rows": rows,
            "ratios": rat,
            "targets": TARGETS,
            "fault_checks": checks,
        }
    finally:
        stop(app_proc)
        stop(mock_proc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", help=f"concurrency levels (quick: {QUICK_USERS})")
    p.add_argument("--duration", type=float, help="seconds per level (quick 10, full 20)")
    p.add_argument("--full", action="store_true", help=f"users {FULL_USERS} x 20 s")
    p.add_argument("--quick", action="store_true", help="the default: 1,50,200 x 10 s")
    p.add_argument("--faults", action="store_true", help="inject faults, check the database")
    p.add_argument("--ttft", type=float, default=0.2, help="mock: seconds to first token")
    p.add_argument("--tokens-per-second", type=float, default=40.0, help="mock: stream speed")
    p.add_argument("--reply-tokens", type=int, default=40, help="mock: tokens per reply")
    p.add_argument(
        "--write-interval",
        type=float,
        default=0.0,
        help="mock: send the tokens due within this many seconds in one write "
        "(0, the default: a write per token, as providers send them)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--think", type=float, default=0.0, help="pause between a user's turns")
    p.add_argument(
        "--stagger",
        type=float,
        help="spread the users' first turns over this many seconds, then measure "
        "(default: one reply's time, TTFT + tokens / speed; 0: all at once)",
    )
    p.add_argument("--turns-per-conversation", type=int, default=10)
    p.add_argument("--drain", type=float, default=30.0, help="max wait for in-flight turns")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB), help=DEFAULT_DB
    )
    p.add_argument("--target", help="an app already running (skips starting gunicorn)")
    p.add_argument("--server-pid", type=int, help="with --target: its master pid, for CPU")
    p.add_argument("--mock-url", help="a mock provider already running (the target's)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the app, e.g. DATABASE_POOL_MAX_SIZE=45 (repeatable)",
    )
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured turns first")
    p.add_argument("--_setup-users", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.users is None:
        args.users = FAULT_USERS if args.faults else FULL_USERS if args.full else QUICK_USERS
    if args.duration is None:
        args.duration = 20.0 if args.full or args.faults else 10.0
    secret = os.environ.get("SECRET_KEY", "")
    args.secret_key = secret if args.target and secret else secrets.token_urlsafe(50)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._setup_users is not None:
        setup_users_in_django(args._setup_users, Path(args._out))
        return 0
    report = asyncio.run(amain(args))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"chat_load-{stamp}{'-faults' if args.faults else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
