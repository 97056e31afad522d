"""Over real HTTP, through uvicorn: the user presses Stop (the browser aborts the
request) — the partial reply is kept, marked stopped, its usage recorded, and the
upstream call closed."""

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import pytest
from django.test import Client

from conversations.models import Message, UsageRecord
from llmchat.tests.asgi import receive_then_leave
from providers import keys


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


@pytest.mark.django_db(transaction=True)
def test_stop_keeps_the_partial_reply_and_closes_the_upstream_call(
    asgi_live_server: Any, alice: Any, mock_provider: Any, prices: None
) -> None:
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-key-0000000000000000")
    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    http = session_for(alice, asgi_live_server.url)
    body = {
        "conversation": None,
        "provider": "openai",
        "model": "gpt-4o",
        "message": "Go on and on",
    }
    deltas = 0
    with http.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                deltas += 1
                if deltas == 5:
                    break  # leaving the block closes the connection: the Stop button
    http.close()

    def stopped() -> bool:
        return Message.objects.filter(role="assistant", status="stopped").exists()

    wait_for(stopped)
    reply = Message.objects.get(role="assistant")
    # At least what the client saw before it went away.
    assert reply.content.startswith("You said: Go on and")
    assert reply.usage_estimated  # OpenAI reports usage only at the end
    record = UsageRecord.objects.get(message=reply)
    assert record.outcome == "stopped"
    assert record.estimated
    assert record.output_tokens > 0
    assert record.cost is not None
    assert record.cost > 0
    wait_for(lambda: mock_provider.disconnects == 1)
    assert Message.objects.get(role="user").content == "Go on and on"
    # The conversation is free for the next message.
    reply.conversation.refresh_from_db()
    assert reply.conversation.busy_until is None


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
    monkeypatch.setattr("conversations.api.CHECKPOINT_SECONDS", 0.2)
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

    from conversations import services
    from conversations.models import Conversation

    conversation = Conversation.objects.create(user=alice, provider="demo", model="demo-echo")

    def reply(status: str, content: str = "") -> Message:
        return Message.objects.create(
            conversation=conversation, role="assistant", status=status, content=content
        )

    streaming = [reply("generating") for _ in range(3)]
    final = reply("complete", "The whole reply.")  # its final save got there first
    texts = {m.pk: f"so far {i}" for i, m in enumerate(streaming)}
    texts[final.pk] = "The whole"
    with CaptureQueriesContext(connection) as queries:
        services.chat_checkpoint(texts)
    assert len(queries) == 1
    for i, m in enumerate(streaming):
        m.refresh_from_db()
        assert m.content == f"so far {i}"
    final.refresh_from_db()
    assert final.content == "The whole reply."
    monkeypatch.setattr(services, "CHECKPOINT_BATCH", 2)  # a bounded statement
    with CaptureQueriesContext(connection) as queries:
        services.chat_checkpoint({m.pk: "more" for m in streaming})
    assert len(queries) == 2
    assert set(Message.objects.filter(status="generating").values_list("content", flat=True)) == {
        "more"
    }


@pytest.mark.anyio
async def test_the_checkpointer_saves_what_changed_for_the_replies_it_tracks(
    monkeypatch: Any,
) -> None:
    from conversations import api

    saves: list[dict[int, str]] = []
    monkeypatch.setattr(api, "_checkpoint", lambda texts: saves.append(dict(texts)))
    checkpoints = api._Checkpoints()
    one, two = ["Hel"], ["Wor"]
    checkpoints.track(1, one)
    checkpoints.track(2, two)
    one.append("lo")
    await checkpoints.save()
    assert saves == [{1: "Hello", 2: "Wor"}]  # both, in one save
    two.append("ld")
    await checkpoints.save()
    assert saves[-1] == {2: "World"}  # only what changed
    await checkpoints.save()
    assert len(saves) == 2  # nothing changed: nothing written
    checkpoints.untrack(2)  # its final save follows
    one.append("!")
    await checkpoints.save()
    assert saves[-1] == {1: "Hello!"}
    checkpoints.untrack(1)
    await checkpoints._task  # type: ignore[misc]  # ends once nothing is tracked
    assert checkpoints._task is not None
    assert checkpoints._task.done()


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


def _chat_scope(alice: Any) -> tuple[dict[str, Any], bytes]:
    from llmchat.tests.asgi import http_scope, session_key

    body = json.dumps(
        {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Go on"}
    ).encode()
    return http_scope("POST", "/api/chat", session_key(alice), json_body=True), body


async def _assert_released_unbilled(mock_provider: Any) -> None:
    from conversations.models import Conversation, Status

    reply = await Message.objects.aget(role="assistant")
    assert reply.status == Status.STOPPED
    assert reply.content == ""
    record = await UsageRecord.objects.aget(message=reply)
    assert (record.input_tokens, record.output_tokens, record.estimated) == (0, 0, False)
    conversation = await Conversation.objects.aget(pk=reply.conversation_id)
    assert conversation.busy_until is None  # free for the next message
    assert mock_provider.requests == []  # the provider was never called


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_client_gone_while_the_turn_was_being_started_releases_it(
    alice: Any, mock_provider: Any, prices: None, monkeypatch: Any
) -> None:
    import asyncio
    import time

    from asgiref.sync import sync_to_async

    from conversations import services
    from llmchat.handlers import ASGIHandler

    await sync_to_async(keys.provider_key_save)(
        user=alice, provider="openai", key="sk-test-key-0000000000000000"
    )
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_start = services.chat_start

    def slow_start(**kwargs: Any) -> Any:
        turn = real_start(**kwargs)
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)  # the client leaves while the request is still in the view
        return turn

    monkeypatch.setattr(services, "chat_start", slow_start)
    scope, body = await sync_to_async(_chat_scope)(alice)
    receive = receive_then_leave(body, started)

    sent: list[Any] = []

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    async with asyncio.timeout(10):
        await ASGIHandler()(scope, receive, send)
    assert sent == []  # nothing was sent: the request was cancelled

    async def released() -> bool:
        from conversations.models import Status

        return await Message.objects.filter(role="assistant", status=Status.STOPPED).aexists()

    async with asyncio.timeout(5):
        while not await released():  # noqa: ASYNC110 - the database has no event to wait on
            await asyncio.sleep(0.05)
    await _assert_released_unbilled(mock_provider)


async def _leave_while(alice: Any, sending: Callable[[Mapping[str, Any]], bool]) -> None:
    """POST /api/chat straight through our ASGI handler; the client leaves while
    the server is writing the first message that `sending` picks (the write never
    completes, as with a client that stopped reading)."""
    import asyncio

    from asgiref.sync import sync_to_async

    from llmchat.handlers import ASGIHandler

    await sync_to_async(keys.provider_key_save)(
        user=alice, provider="openai", key="sk-test-key-0000000000000000"
    )
    scope, body = await sync_to_async(_chat_scope)(alice)
    gone = asyncio.Event()
    receive = receive_then_leave(body, gone)

    async def send(message: Mapping[str, Any]) -> None:
        if sending(message):
            gone.set()
            await asyncio.sleep(3600)

    async with asyncio.timeout(10):
        await ASGIHandler()(scope, receive, send)


def _body_with(marker: bytes) -> Callable[[Mapping[str, Any]], bool]:
    return lambda m: m["type"] == "http.response.body" and marker in m["body"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_client_gone_while_an_event_is_being_written_stops_the_reply_at_once(
    alice: Any, mock_provider: Any, prices: None
) -> None:
    # Our generator is suspended at its yield, not waiting on the provider. The
    # reply must be saved as stopped when the request ends, not whenever the
    # generator is garbage-collected.
    import gc

    from conversations.models import Status

    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    gc.disable()  # the generator must not be rescued by a collection
    try:
        await _leave_while(alice, _body_with(b"event: delta"))
        reply = await Message.objects.aget(role="assistant")
        assert reply.status == Status.STOPPED
        assert reply.content  # the text that had arrived is kept
    finally:
        gc.enable()


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_client_gone_before_the_headers_went_out_releases_the_turn(
    alice: Any, mock_provider: Any, prices: None
) -> None:
    await _leave_while(alice, lambda m: m["type"] == "http.response.start")
    await _assert_released_unbilled(mock_provider)


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_client_gone_while_the_start_event_is_written_releases_the_turn(
    alice: Any, mock_provider: Any, prices: None
) -> None:
    await _leave_while(alice, _body_with(b"event: start"))
    await _assert_released_unbilled(mock_provider)


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_a_reply_is_saved_when_the_request_is_cancelled_while_it_is_being_saved(
    alice: Any, mock_provider: Any, prices: None, monkeypatch: Any
) -> None:
    # The client leaves, and the server cancels the request too (a worker shutting
    # down): the request's own thread goes back to the pool before the reply's save
    # has run. The save must not need that thread.
    import asyncio

    from asgiref.sync import sync_to_async

    from conversations.models import Status
    from llmchat.handlers import ASGIHandler
    from providers.base import ChatStream

    mock_provider.configure(reply_tokens=400, tokens_per_second=40)
    await sync_to_async(keys.provider_key_save)(
        user=alice, provider="openai", key="sk-test-key-0000000000000000"
    )
    scope, body = await sync_to_async(_chat_scope)(alice)
    gone = asyncio.Event()
    closing = asyncio.Event()
    real_aclose = ChatStream.aclose

    async def slow_aclose(self: ChatStream) -> None:
        closing.set()  # the save comes next: the request is cancelled meanwhile
        await asyncio.sleep(0.2)
        await real_aclose(self)

    monkeypatch.setattr(ChatStream, "aclose", slow_aclose)

    async def send(message: Mapping[str, Any]) -> None:
        if _body_with(b"event: delta")(message):
            gone.set()
            await asyncio.sleep(3600)

    request = asyncio.ensure_future(ASGIHandler()(scope, receive_then_leave(body, gone), send))
    await closing.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    async def saved() -> bool:
        return await Message.objects.filter(role="assistant", status=Status.STOPPED).aexists()

    async with asyncio.timeout(5):
        while not await saved():  # noqa: ASYNC110 - the database has no event to wait on
            await asyncio.sleep(0.05)
    reply = await Message.objects.aget(role="assistant")
    assert reply.content  # the text that had arrived is kept
