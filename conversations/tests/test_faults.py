"""Under load with provider faults (429, 500, dropped connections, stalls) and clients
that go away mid-stream, over real HTTP through uvicorn: every turn is accounted
for. The user's message is saved, no reply is left "generating", nothing answers
500, and the usage ledger matches what the client was told.

A small, behaviour-only version of `bench/chat_load.py --faults` (no timings)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from typing import Any

import httpx2
import pytest
from allauth.account.models import EmailAddress
from django.test import Client

from accounts.models import User
from conversations.models import Message, Status, UsageRecord
from providers import keys

USERS = 6
TURNS = 6
REPLY_TOKENS = 12
FINAL = {Status.COMPLETE, Status.PARTIAL, Status.ERROR, Status.STOPPED}


@dataclasses.dataclass
class Turn:
    status: int = 0
    start: dict[str, Any] | None = None
    final_event: str = ""
    final: dict[str, Any] | None = None
    walked_away: bool = False


def signed_in(user: Any, base_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Cookies and headers of a signed-in browser (as in test_disconnect.py)."""
    django_client = Client()
    django_client.force_login(user)
    with httpx2.Client(
        base_url=base_url,
        cookies={"sessionid": django_client.cookies["sessionid"].value},
        timeout=10,
    ) as http:
        page = http.get("/")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token, page.text[:500]
        return dict(http.cookies), {"X-CSRFToken": token.group(1)}


async def one_turn(
    http: httpx2.AsyncClient, conversation: int | None, text: str, walk_away_after: int
) -> Turn:
    turn = Turn()
    body = {"conversation": conversation, "provider": "openai", "model": "gpt-4o", "message": text}
    async with http.stream("POST", "/api/chat", json=body) as response:
        turn.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            return turn
        event, deltas = "", 0
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "start":
                    turn.start = data
                elif event == "delta":
                    deltas += 1
                    if walk_away_after and deltas >= walk_away_after:
                        turn.walked_away = True
                        return turn  # leaving the block drops the connection: Stop
                elif event in {"done", "error"}:
                    turn.final_event, turn.final = event, data
    return turn


async def user_session(
    base_url: str, cookies: dict[str, str], headers: dict[str, str], n: int
) -> list[Turn]:
    turns: list[Turn] = []
    conversation: int | None = None
    async with httpx2.AsyncClient(
        base_url=base_url, cookies=cookies, headers=headers, timeout=30
    ) as http:
        for i in range(TURNS):
            # Some turns walk away after a couple of tokens.
            walk_away = 2 if (n + i) % 5 == 3 else 0
            turn = await one_turn(http, conversation, f"user {n} turn {i} says hello", walk_away)
            turns.append(turn)
            if turn.walked_away or turn.start is None:
                conversation = None  # the stopped reply may still be saving
            else:
                conversation = turn.start["conversation"]
    return turns


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.django_db(transaction=True)
def test_faults_under_concurrent_load_leave_consistent_records(
    asgi_live_server: Any, mock_provider: Any, settings: Any, prices: None
) -> None:
    settings.PROVIDER_FIRST_TOKEN_TIMEOUT = 0.5
    settings.PROVIDER_RETRY_BACKOFF = 0.01
    settings.CHAT_RATE_LIMIT = ""
    settings.CHAT_MAX_CONCURRENT_STREAMS = 100
    settings.CHAT_HEARTBEAT_SECONDS = 0.2
    mock_provider.configure(
        fault_rates={"429": 0.1, "500": 0.05, "cut": 0.1, "stall": 0.05},
        seed=20240611,
        stall_seconds=1.5,
        retry_after=0,
        reply_tokens=REPLY_TOKENS,
        tokens_per_second=60,
    )
    browsers = []
    for n in range(USERS):
        user = User.objects.create_user(email=f"load{n}@example.com", password=None)
        EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
        keys.provider_key_save(user=user, provider="openai", key=f"sk-test-{n:020d}")
        browsers.append(signed_in(user, asgi_live_server.url))

    async def everyone() -> list[list[Turn]]:
        return await asyncio.gather(
            *(
                user_session(asgi_live_server.url, cookies, headers, n)
                for n, (cookies, headers) in enumerate(browsers)
            )
        )

    turns = [t for per_user in asyncio.run(everyone()) for t in per_user]

    # Nothing was refused and nothing answered 500: faults end up in the stream.
    assert {t.status for t in turns} == {200}
    started = [t for t in turns if t.start is not None]
    assert len(started) == USERS * TURNS
    # Every stream the client read to the end closed with done or error.
    assert all(t.final_event in {"done", "error"} for t in started if not t.walked_away)
    # Faults really happened: retried calls mean more provider requests than turns.
    assert len(mock_provider.requests) > len(started)

    # Replies whose client went away are saved once the server notices.
    assert wait_for(lambda: not Message.objects.filter(status=Status.GENERATING).exists()), list(
        Message.objects.filter(status=Status.GENERATING).values("id", "content")
    )

    # Every user message was saved before its provider call.
    user_ids = {t.start["user_message"] for t in started if t.start}
    assert set(Message.objects.filter(role="user").values_list("id", flat=True)) == user_ids

    replies = {m.pk: m for m in Message.objects.filter(role="assistant")}
    assert set(replies) == {t.start["message"] for t in started if t.start}
    assert {m.status for m in replies.values()} <= FINAL

    ledger: dict[int | None, list[UsageRecord]] = {}
    for record in UsageRecord.objects.all():
        ledger.setdefault(record.message_id, []).append(record)
    # One ledger row per reply, whatever became of it, with the reply's outcome.
    for pk, message in replies.items():
        rows = ledger.get(pk, [])
        assert len(rows) == 1, (pk, message.status, rows)
        assert rows[0].outcome == message.status
        assert (rows[0].input_tokens, rows[0].output_tokens) == (
            message.input_tokens,
            message.output_tokens,
        )
    assert None not in ledger

    # A complete turn's ledger row carries exactly the tokens the client was told,
    # which are the provider's own count.
    complete = [t for t in started if t.final_event == "done" and t.final]
    assert complete
    for t in complete:
        assert t.final is not None
        row = ledger[t.final["id"]][0]
        assert row.outcome == Status.COMPLETE
        assert not row.estimated
        assert row.input_tokens == t.final["input_tokens"]
        assert row.output_tokens == t.final["output_tokens"] == REPLY_TOKENS
    # A failed turn told the client its final status, and the ledger agrees.
    for t in started:
        if t.final_event == "error" and t.final:
            assert t.final["status"] in {Status.PARTIAL, Status.ERROR}
            assert ledger[t.final["id"]][0].outcome == t.final["status"]
