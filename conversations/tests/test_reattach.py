"""Over real HTTP, through uvicorn: a reply belongs to the server. A client that
leaves changes nothing; it (or another tab, on another worker) picks the reply
up where it left off; Stop, from any tab, keeps the reply so far, marked
stopped, with its usage, and closes the upstream call."""

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from django.test import Client

from conftest import make_user
from conversations.models import Message, UsageRecord
from providers import keys
from providers.base import Usage


def session_for(user: Any, base_url: str) -> httpx2.Client:
    django_client = Client()
    django_client.force_login(user)
    session = django_client.cookies["sessionid"].value
    http = httpx2.Client(base_url=base_url, cookies={"sessionid": session}, timeout=10)
    page = http.get("/")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token, page.text[:500]
    http.headers["X-CSRFToken"] = token.group(1)
    return http


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def read_events(
    lines: Any, *, until: Callable[[list[tuple[str, str, dict[str, Any]]]], bool] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each SSE event, until `until` says stop or the stream ends."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    event_id, name = "", "message"
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((event_id, name, json.loads(line[6:])))
            event_id, name = "", "message"
            if until is not None and until(events):
                break
    return events


def text_of(events: list[tuple[str, str, dict[str, Any]]]) -> str:
    return "".join(data["text"] for _, name, data in events if name == "delta")


def deltas(n: int) -> Callable[[list[tuple[str, str, dict[str, Any]]]], bool]:
    return lambda events: sum(1 for _, name, _ in events if name == "delta") >= n


BODY = {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Go on"}


def leave_after_some_deltas(http: httpx2.Client) -> tuple[int, str, str]:
    """Post a message, read a few deltas, leave: (reply id, last event id, text so far)."""
    with http.stream("POST", "/api/chat", json=BODY) as response:
        assert response.status_code == 200
        events = read_events(response.iter_lines(), until=deltas(3))
    http.close()
    last_id = [i for i, name, _ in events if name == "delta"][-1]
    return events[0][2]["message"], last_id, text_of(events)


def reattach(
    http: httpx2.Client, reply: int, last_id: str
) -> list[tuple[str, str, dict[str, Any]]]:
    headers = {"Last-Event-ID": last_id}
    with http.stream("GET", f"/api/chat/{reply}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return read_events(response.iter_lines())


@pytest.fixture
def streaming_reply(alice: Any, mock_provider: Any, prices: None, settings: Any) -> None:
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=60, tokens_per_second=40)  # 1.5 s


def assert_whole_reply(
    reply: int, before: str, after: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """What the client got before leaving and after coming back is the reply, once."""
    final = after[-1]
    assert final[1] == "done", after
    saved = Message.objects.get(pk=reply)
    assert saved.status == "complete"
    assert before + text_of(after) == saved.content == final[2]["content"]
    assert final[2]["cost"] is not None
    record = UsageRecord.objects.get(message=saved)
    assert (record.outcome, record.estimated) == ("complete", False)


@pytest.mark.django_db(transaction=True)
def test_a_client_that_leaves_does_not_stop_the_reply_and_can_come_back_for_the_rest(
    asgi_live_server: Any, alice: Any, streaming_reply: None
) -> None:
    reply, last_id, before = leave_after_some_deltas(session_for(alice, asgi_live_server.url))
    after = reattach(session_for(alice, asgi_live_server.url), reply, last_id)
    assert_whole_reply(reply, before, after)


@pytest.mark.django_db(transaction=True)
def test_a_reply_that_ended_meanwhile_is_sent_from_where_the_client_left(
    asgi_live_server: Any, alice: Any, streaming_reply: None
) -> None:
    reply, last_id, before = leave_after_some_deltas(session_for(alice, asgi_live_server.url))
    wait_for(lambda: Message.objects.get(pk=reply).status == "complete")
    after = reattach(session_for(alice, asgi_live_server.url), reply, last_id)
    assert [name for _, name, _ in after] == ["delta", "done"]
    assert_whole_reply(reply, before, after)
    # From the start with ?after=0, and only by its owner.
    http = session_for(alice, asgi_live_server.url)
    with http.stream("GET", f"/api/chat/{reply}/events?after=0") as response:
        assert text_of(read_events(response.iter_lines())) == Message.objects.get(pk=reply).content


@pytest.mark.django_db(transaction=True)
def test_another_worker_picks_the_reply_up_from_the_checkpoints(
    asgi_live_server: Any,
    second_live_server: Any,
    alice: Any,
    streaming_reply: None,
    settings: Any,
    monkeypatch: Any,
) -> None:
    settings.REDIS_URL = ""
    monkeypatch.setattr("conversations.streaming.CHECKPOINT_SECONDS", 0.2)
    reply, last_id, before = leave_after_some_deltas(session_for(alice, asgi_live_server.url))
    after = reattach(session_for(alice, second_live_server.url), reply, last_id)
    assert_whole_reply(reply, before, after)


@pytest.mark.django_db(transaction=True)
def test_with_redis_another_worker_picks_the_reply_up_as_it_streams(
    asgi_live_server: Any,
    second_live_server: Any,
    alice: Any,
    streaming_reply: None,
    settings: Any,
    monkeypatch: Any,
) -> None:
    from conftest import require_redis

    require_redis()
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    # Checkpoints too rare to help: the text comes through Redis.
    monkeypatch.setattr("conversations.streaming.CHECKPOINT_SECONDS", 60)
    reply, last_id, before = leave_after_some_deltas(session_for(alice, asgi_live_server.url))
    after = reattach(session_for(alice, second_live_server.url), reply, last_id)
    assert len([name for _, name, _ in after if name == "delta"]) > 1  # as it streamed
    assert_whole_reply(reply, before, after)


@pytest.mark.django_db(transaction=True)
def test_stop_from_a_second_tab_keeps_the_partial_reply_and_closes_the_upstream_call(
    asgi_live_server: Any, alice: Any, mock_provider: Any, prices: None, monkeypatch: Any
) -> None:
    # On the worker that generates it, Stop is at once, not at a checkpoint.
    monkeypatch.setattr("conversations.streaming.CHECKPOINT_SECONDS", 60)
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    http = session_for(alice, asgi_live_server.url)
    other_tab = session_for(alice, asgi_live_server.url)
    with http.stream("POST", "/api/chat", json={**BODY, "message": "Go on and on"}) as response:
        lines = response.iter_lines()
        events = read_events(lines, until=deltas(5))
        reply = events[0][2]["message"]
        stopped = other_tab.post(f"/api/chat/{reply}/stop")
        assert stopped.status_code == 200
        assert stopped.json() == {"message": reply, "stopping": True}
        events += read_events(lines)  # the first tab hears how it ended
    assert events[-1][1] == "done"
    assert events[-1][2]["status"] == "stopped"
    saved = Message.objects.get(pk=reply)
    assert saved.status == "stopped"
    assert saved.content.startswith("You said: Go on and")
    assert saved.content == text_of(events)
    assert saved.usage_estimated  # OpenAI reports usage only at the end
    record = UsageRecord.objects.get(message=saved)
    assert record.outcome == "stopped"
    assert record.estimated
    assert record.output_tokens > 0
    assert record.cost is not None
    assert record.cost > 0
    wait_for(lambda: mock_provider.disconnects == 1)
    saved.conversation.refresh_from_db()
    assert saved.conversation.busy_until is None  # free for the next message
    # Stopping it again, or a reply that is not theirs: nothing, and a 404.
    assert other_tab.post(f"/api/chat/{reply}/stop").json()["stopping"] is False
    bob_http = session_for(make_user("bob@example.com"), asgi_live_server.url)
    assert bob_http.post(f"/api/chat/{reply}/stop").status_code == 404
    assert bob_http.get(f"/api/chat/{reply}/events").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_stop_sent_to_another_worker_stops_the_reply_at_its_next_checkpoint(
    asgi_live_server: Any,
    second_live_server: Any,
    alice: Any,
    mock_provider: Any,
    prices: None,
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr("conversations.streaming.CHECKPOINT_SECONDS", 0.2)
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    http = session_for(alice, asgi_live_server.url)
    with http.stream("POST", "/api/chat", json=BODY) as response:
        lines = response.iter_lines()
        events = read_events(lines, until=deltas(3))
        reply = events[0][2]["message"]
        other = session_for(alice, second_live_server.url)
        assert other.post(f"/api/chat/{reply}/stop").json()["stopping"] is True
        events += read_events(lines)
    assert events[-1][2]["status"] == "stopped"
    assert Message.objects.get(pk=reply).status == "stopped"
    wait_for(lambda: mock_provider.disconnects == 1)


@pytest.mark.django_db(transaction=True)
def test_a_bad_cursor_is_a_400(asgi_live_server: Any, alice: Any, streaming_reply: None) -> None:
    http = session_for(alice, asgi_live_server.url)
    with http.stream("POST", "/api/chat", json=BODY) as response:
        reply = read_events(response.iter_lines())[0][2]["message"]
    for bad in ("-1", "abc", "1e3", "9" * 20):
        answer = http.get(f"/api/chat/{reply}/events", headers={"Last-Event-ID": bad})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid"


@pytest.mark.django_db(transaction=True)
def test_a_long_reply_is_saved_while_it_streams(
    asgi_live_server: Any,
    alice: Any,
    mock_provider: Any,
    prices: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # If the process died now, the sweeper would keep what was saved: the text so
    # far is written to the reply's row every CHECKPOINT_SECONDS while it streams.
    monkeypatch.setattr("conversations.streaming.CHECKPOINT_SECONDS", 0.2)
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    http = session_for(alice, asgi_live_server.url)
    body = {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Go on"}
    received = ""
    saved = None
    with http.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                received += json.loads(line[6:])["text"]
            saved = Message.objects.filter(role="assistant", status="generating").first()
            if saved is not None and len(saved.content) > 20:
                break  # mid-reply: the row already holds a part of it
    http.close()
    assert saved is not None, "nothing was saved while the reply streamed"
    assert saved.content.startswith("You said: Go on")
    # Both are the start of one reply (the row may hold a token not flushed yet).
    assert saved.content.startswith(received) or received.startswith(saved.content)


@pytest.mark.django_db
def test_the_replies_so_far_are_saved_in_one_update(alice: Any, monkeypatch: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations import turns
    from conversations.models import Conversation

    conversation = Conversation.objects.create(user=alice, provider="demo", model="demo-echo")

    def reply(status: str, content: str = "") -> Message:
        return Message.objects.create(
            conversation=conversation, role="assistant", status=status, content=content
        )

    streaming = [reply("generating") for _ in range(3)]
    final = reply("complete", "The whole reply.")  # its final save got there first
    texts = {m.pk: turns.Progress(f"so far {i}", None) for i, m in enumerate(streaming)}
    texts[final.pk] = turns.Progress("The whole", None)
    texts[streaming[0].pk] = turns.Progress("so far 0", Usage(input_tokens=12, output_tokens=3))
    with CaptureQueriesContext(connection) as queries:
        turns.chat_checkpoint(texts)
    assert len(queries) == 1
    for i, m in enumerate(streaming):
        m.refresh_from_db()
        assert m.content == f"so far {i}"
    # The usage reported so far, for the sweeper should the process die.
    assert (streaming[0].input_tokens, streaming[0].output_tokens) == (12, 3)
    assert (streaming[1].input_tokens, streaming[1].output_tokens) == (0, 0)
    final.refresh_from_db()
    assert final.content == "The whole reply."
    monkeypatch.setattr(turns, "CHECKPOINT_BATCH", 2)  # a bounded statement
    with CaptureQueriesContext(connection) as queries:
        turns.chat_checkpoint({m.pk: turns.Progress("more", None) for m in streaming})
    assert len(queries) == 2
    assert set(Message.objects.filter(status="generating").values_list("content", flat=True)) == {
        "more"
    }


@pytest.mark.django_db(transaction=True)
def test_the_stream_is_served_incrementally(
    asgi_live_server: Any, alice: Any, settings: Any, prices: None
) -> None:
    # The first delta arrives long before the last: nothing buffers the reply.
    settings.DEMO_TOKEN_DELAY = 0.02
    http = session_for(alice, asgi_live_server.url)
    body = {"conversation": None, "provider": "demo", "model": "demo-echo", "message": "hi"}
    stamps: dict[str, float] = {}
    with http.stream("POST", "/api/chat", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("event: delta") and "first" not in stamps:
                stamps["first"] = time.monotonic()
            if line.startswith("data: ") and '"status":"complete"' in line:
                stamps["done"] = time.monotonic()
                assert json.loads(line[6:])["cost"] == "0.000000"
    assert stamps["done"] - stamps["first"] > 0.3


@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_reply_is_swept_as_partial_with_its_checkpoint(
    alice: Any, mock_provider: Any, prices: None, settings: Any, monkeypatch: Any
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{db['NAME']}"
    else:
        url = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "ENV_FILE": "",
        "DEBUG": "true",
        "DATABASE_URL": url,
        "REDIS_URL": "",
        "OPENAI_BASE_URL": settings.OPENAI_BASE_URL,
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "llmchat.asgi:application", "--port", str(port)],
        env=env,
    )
    try:
        wait_for(lambda: _listening(port), timeout=30)
        http = session_for(alice, f"http://127.0.0.1:{port}")
        with http.stream("POST", "/api/chat", json=BODY) as response:
            events = read_events(response.iter_lines(), until=deltas(3))
            reply = events[0][2]["message"]
            # A checkpoint (every 2 s) has saved some of it: then the worker dies.
            wait_for(lambda: len(Message.objects.get(pk=reply).content) > 0, timeout=10)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    saved = Message.objects.get(pk=reply)
    assert saved.status == "generating"  # nothing closed it: its process is gone
    later = timezone.now() + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 61)
    monkeypatch.setattr(timezone, "now", lambda: later)
    with open(os.devnull, "w") as quiet:
        call_command("sweep_streams", stdout=quiet)
    swept = Message.objects.get(pk=reply)
    assert swept.status == "partial"
    assert swept.content == saved.content
    assert swept.content.startswith("You said: Go on")
    assert swept.error_code == "unavailable"
    record = UsageRecord.objects.get(message=swept)
    assert (record.outcome, record.estimated) == ("partial", True)
    assert record.output_tokens > 0
    swept.conversation.refresh_from_db()
    assert swept.conversation.busy_until is None


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True
