"""CPU per chat turn in one process: the cost of a turn's own code.

    .venv/bin/python bench/turn_cost.py                 # 60 turns, fast tokens
    .venv/bin/python bench/turn_cost.py --tps 40        # tokens spread over a second
    .venv/bin/python bench/turn_cost.py --tps 200 --reply-tokens 400   # longer replies
    .venv/bin/python bench/turn_cost.py --trace         # one turn: its queries and thread trips

Calls the ASGI application directly (no HTTP server, no concurrency) for sequential
POST /api/chat turns of 40 tokens, with the mock provider in a subprocess and the
database at --database-url (PostgreSQL, default postgres://postgres@127.0.0.1:5432/llmchat_bench,
migrated: run bench/chat_load.py once first). Prints CPU time per turn (the process's
user + system time, all threads), wall time and time to the first delta. Its user is
"turn-cost@bench-turn.invalid". It prints numbers and never fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "turn-cost@bench-turn.invalid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--tps", type=float, default=400.0, help="mock tokens per second")
    parser.add_argument("--reply-tokens", type=int, default=40, help="tokens in each reply")
    parser.add_argument("--trace", action="store_true", help="one turn's queries and trips")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/llmchat_bench"
    )
    args = parser.parse_args()

    port = free_port()
    mock = subprocess.Popen(  # noqa: S603 - our own command line
        [
            sys.executable,
            "-m",
            "devtools.mockprovider",
            "--port",
            str(port),
            "--ttft",
            "0",
            "--tokens-per-second",
            str(args.tps),
            "--reply-tokens",
            str(args.reply_tokens),
            "--seed",
            "1",
        ],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "true", "ENV_FILE": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.5)
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "llmchat.settings",
                "ENV_FILE": "",
                "DEBUG": "false",
                "SECRET_KEY": "turn-cost-" + "k3Jd9Fq2Lm8Rt5Wz1Xc7Vb4Nh6Gp0Ys" * 2,
                "ALLOWED_HOSTS": "127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",
                "DATABASE_URL": args.database_url,
                "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                "ALLOWED_PRIVATE_BASE_URLS": f"http://127.0.0.1:{port}",
                "CHAT_RATE_LIMIT": "",
                "CHAT_MAX_CONCURRENT_STREAMS": "1000",
                "LOG_LEVEL": "WARNING",
            }
        )
        sys.path.insert(0, str(ROOT))
        import uvloop

        uvloop.run(run(args))
    finally:
        mock.terminate()


async def run(args: argparse.Namespace) -> None:
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(_setup)()
    from llmchat.asgi import application

    async def turn(conversation: int | None) -> tuple[int, float]:
        body = json.dumps(
            {
                "conversation": conversation,
                "provider": "openai",
                "model": "gpt-4o",
                "message": "Hello there, how are you?",
                "client_message_id": str(uuid.uuid4()),  # as the browser sends it
            }
        ).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/chat",
            "raw_path": b"/api/chat",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"cookie", cookie),
                (b"x-csrftoken", b"a" * 32),
            ],
            "client": ("127.0.0.1", 5555),
            "server": ("127.0.0.1", 8000),
        }
        done = asyncio.Event()
        sent = False
        chunks: list[bytes] = []
        started = time.perf_counter()
        first = 0.0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            nonlocal first
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not first and b"event: delta" in chunks[-1]:
                    first = time.perf_counter() - started
                if not message.get("more_body"):
                    done.set()

        await application(scope, receive, send)
        text = b"".join(chunks).decode()
        assert "event: done" in text, text[-300:]
        start = json.loads(text.split("event: start\ndata: ")[1].split("\n")[0])
        return int(start["conversation"]), first

    conversation = None
    for i in range(5):  # warm-up
        conversation, _ = await turn(conversation if i % 10 else None)
    if args.trace:
        await trace(turn, conversation)
        return
    cpu, wall = time.process_time(), time.perf_counter()
    firsts = []
    for i in range(args.turns):
        conversation, first = await turn(conversation if i % 10 else None)
        firsts.append(first)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    firsts.sort()
    print(
        f"{args.turns} turns of {args.reply_tokens} tokens at {args.tps:g} tokens/s: "
        f"CPU {cpu / args.turns * 1000:.1f} ms a turn, wall {wall / args.turns * 1000:.1f} ms, "
        f"first delta p50 {firsts[len(firsts) // 2] * 1000:.1f} ms"
    )


async def trace(turn: Any, conversation: int | None) -> None:
    from asgiref.sync import SyncToAsync
    from django.db.backends import utils

    log: list[tuple[float, float, str]] = []  # (start, duration, what), in seconds
    execute = utils.CursorWrapper._execute_with_wrappers  # type: ignore[attr-defined]
    call = SyncToAsync.__call__

    def logged_execute(self: Any, sql: str, *rest: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(self, sql, *rest, **kw)
        finally:
            log.append((t, time.perf_counter() - t, "query  " + sql[:100]))

    async def logged_call(self: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await call(self, *a, **k)
        finally:
            name = getattr(self.func, "__qualname__", repr(self.func))
            log.append((t, time.perf_counter() - t, "thread " + name))

    utils.CursorWrapper._execute_with_wrappers = logged_execute  # type: ignore[attr-defined]
    SyncToAsync.__call__ = logged_call  # type: ignore[method-assign]
    began = time.perf_counter()
    _, first = await turn(conversation)
    log.append((began + first, 0.0, "first delta sent"))
    print("  at ms  took ms")
    for at, took, what in sorted(log):
        print(f"{(at - began) * 1000:7.2f} {took * 1000:8.2f}  {what}")
    queries = sum(what.startswith("query") for _, _, what in log)
    print(f"{queries} queries, {sum(w.startswith('thread') for _, _, w in log)} trips to a thread")


def _setup() -> bytes:
    import django

    django.setup()
    from allauth.account.models import EmailAddress
    from django.db import connection
    from django.test import Client

    from accounts.models import User
    from conversations.models import Conversation
    from providers import keys

    user = User.objects.filter(email=EMAIL).first() or User.objects.create_user(
        email=EMAIL, password=None
    )
    EmailAddress.objects.get_or_create(
        user=user, email=EMAIL, defaults={"primary": True, "verified": True}
    )
    Conversation.objects.filter(user=user).delete()
    keys.provider_key_save(user=user, provider="openai", key="sk-turn-cost-00000000000000")
    client = Client()
    client.force_login(user)  # a session with the user signed in
    connection.close()
    session = client.cookies["sessionid"].value
    return f"sessionid={session}; csrftoken={'a' * 32}".encode()


if __name__ == "__main__":
    main()
