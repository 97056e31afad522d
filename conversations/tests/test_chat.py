"""POST /api/chat: the turn, the stream, the ledger, every way it can end."""

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations import streaming, turns
from conversations.models import Conversation, Message, UsageRecord
from conversations.tests.helpers import chat, names, parse_sse
from providers import keys

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

OPENAI_KEY = "sk-test-openai-key-000000000000abcd"


@pytest.fixture
async def signed_in(async_client: Any, alice: Any) -> Any:
    await async_client.aforce_login(alice)
    return async_client


@pytest.fixture
def openai_key(alice: Any, mock_provider: Any) -> None:
    keys.provider_key_save(user=alice, provider="openai", key=OPENAI_KEY)


async def test_the_demo_streams_a_reply_with_tokens_and_cost(signed_in: Any, settings: Any) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    settings.CHAT_STREAM_FLUSH_SECONDS = 0  # one event per chunk
    response, events = await chat(signed_in, message="What is a token?")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    kinds = names(events)
    assert kinds[0] == "start"
    assert kinds[-1] == "done"
    assert kinds.count("delta") > 5
    start, done = events[0][1], events[-1][1]
    text = "".join(d["text"] for n, d in events if n == "delta")
    assert "What is a token?" in text
    assert done["message"] == start["message"]
    assert done["cost"] == "0.000000"
    assert done["input_tokens"] > 0
    assert done["output_tokens"] > 0
    assert {"cached_tokens", "reasoning_tokens", "html"} <= set(done)
    assert "<strong>This is the offline demo model</strong>" in done["html"]

    message = await Message.objects.aget(pk=done["message"])
    assert message.status == "complete"
    assert message.content == text
    record = await UsageRecord.objects.aget(message=message)
    assert record.cost == Decimal(0)
    assert record.key_source == "none"
    assert record.outcome == "complete"
    conversation = await Conversation.objects.aget(pk=start["conversation"])
    assert conversation.title == "What is a token?"
    assert conversation.busy_until is None


async def test_deltas_close_together_go_out_as_one_event(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any
) -> None:
    settings.CHAT_STREAM_FLUSH_SECONDS = 0.3
    words = [f"w{i}" for i in range(20)]
    mock_provider.configure(reply=" ".join(words), tokens_per_second=100)  # ~0.2 s
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    deltas = [d["text"] for name, d in events if name == "delta"]
    assert deltas[0] == "w0"  # the first token is not held back
    assert 2 <= len(deltas) <= 3  # the rest within one or two flush intervals
    assert "".join(deltas) == " ".join(words)
    assert events[-1][1]["content"] == " ".join(words)


async def test_a_busy_process_sends_each_reply_in_fewer_larger_events(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.CHAT_STREAM_FLUSH_SECONDS = 0.05
    settings.CHAT_STREAM_EVENTS_PER_SECOND = 100
    words = [f"w{i}" for i in range(40)]
    mock_provider.configure(reply=" ".join(words), tokens_per_second=100)  # ~0.4 s

    async def deltas() -> list[str]:
        _, events = await chat(signed_in, provider="openai", model="gpt-4o")
        assert events[-1][1]["content"] == " ".join(words)
        return [d["text"] for name, d in events if name == "delta"]

    alone = await deltas()  # 1 reply: 0.05 s apart
    monkeypatch.setattr(streaming._Followers, "count", 59)  # 60 replies: each 0.6 s apart
    busy = await deltas()
    assert busy[0] == "w0"  # the first token is still not held back
    assert "".join(busy) == "".join(alone) == " ".join(words)
    assert len(alone) >= 5
    assert len(busy) <= 3
    assert streaming._Followers.count == 59  # the reply's own count was given back


async def test_a_reply_counts_as_relayed_from_its_first_token_to_its_end(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any
) -> None:
    # One still waiting for its first token sends nothing: it takes no share.
    import asyncio

    mock_provider.configure(ttft=0.4, reply="one two three", tokens_per_second=5)
    counts: dict[str, int] = {}

    async def watch() -> None:
        await asyncio.sleep(0.2)
        counts["waiting"] = streaming._Followers.count
        await asyncio.sleep(0.4)
        counts["streaming"] = streaming._Followers.count

    watcher = asyncio.ensure_future(watch())
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    await watcher
    assert events[-1][0] == "done"
    assert counts == {"waiting": 0, "streaming": 1}
    assert streaming._Followers.count == 0


async def test_a_reply_is_saved_on_the_save_threads_not_the_loop_s_default_ones(
    signed_in: Any, openai_key: None, mock_provider: Any, monkeypatch: Any
) -> None:
    # The event loop's default threads also resolve host names for provider calls:
    # saves waiting for a database connection must not hold them.
    import threading

    real = streaming._finish_turn
    names: list[str] = []

    def finish(**kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return real(**kwargs)

    monkeypatch.setattr(streaming, "_finish_turn", finish)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    assert events[-1][0] == "done"
    assert len(names) == 1
    assert names[0].startswith("chat-db")


def test_the_flush_interval_is_each_reply_s_share_of_the_process_s_events(
    settings: Any, monkeypatch: Any
) -> None:
    settings.CHAT_STREAM_FLUSH_SECONDS = 0.05
    settings.CHAT_STREAM_EVENTS_PER_SECOND = 1000
    cases = [(0, 0.05), (1, 0.05), (50, 0.05), (100, 0.1), (400, 0.4), (5000, 1.0)]
    for streams, interval in cases:  # at most MAX_FLUSH_SECONDS apart
        monkeypatch.setattr(streaming._Followers, "count", streams)
        assert streaming.flush_interval() == pytest.approx(interval)
    settings.CHAT_STREAM_EVENTS_PER_SECOND = 0  # no limit
    assert streaming.flush_interval() == 0.05
    settings.CHAT_STREAM_FLUSH_SECONDS = 0  # one event per chunk, whatever the load
    settings.CHAT_STREAM_EVENTS_PER_SECOND = 1000
    assert streaming.flush_interval() == 0


async def test_without_coalescing_each_chunk_is_an_event(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any
) -> None:
    settings.CHAT_STREAM_FLUSH_SECONDS = 0
    mock_provider.configure(reply="one two three four five", tokens_per_second=100)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    assert [d["text"] for name, d in events if name == "delta"] == [
        "one",
        " two",
        " three",
        " four",
        " five",
    ]


async def test_a_quiet_stream_gets_keep_alive_comments(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any
) -> None:
    settings.CHAT_HEARTBEAT_SECONDS = 0.1
    mock_provider.configure(ttft=0.55, reply="late but here")
    response = await signed_in.post(
        "/api/chat",
        json.dumps(
            {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Hi"}
        ),
        content_type="application/json",
    )
    body = "".join([c.decode() async for c in response.streaming_content])
    before_reply = body.split("event: delta")[0]
    assert before_reply.count(": keep-alive\n\n") >= 3
    assert parse_sse(body)[-1][1]["content"] == "late but here"


async def test_usage_and_cost_come_from_the_provider_and_the_price_table(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    mock_provider.configure(
        input_tokens=1000, cached_tokens=400, reasoning_tokens=5, reply_tokens=10
    )
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    done = events[-1][1]
    assert events[-1][0] == "done"
    assert (done["input_tokens"], done["cached_tokens"]) == (1000, 400)
    assert (done["output_tokens"], done["reasoning_tokens"]) == (15, 5)
    # gpt-4o: 2.5 in, 1.25 cached, 10 out per 1M:  600*2.5 + 400*1.25 + 15*10 = 2150
    assert done["cost"] == "0.002150"
    record = await UsageRecord.objects.aget(message_id=done["message"])
    assert record.key_source == "user"
    assert record.cost == Decimal("0.002150")
    assert record.price_id is not None
    assert not record.unpriced
    assert not record.estimated


async def test_an_unknown_model_is_allowed_and_flagged_unpriced(
    signed_in: Any, openai_key: None
) -> None:
    _, events = await chat(signed_in, provider="openai", model="gpt-experimental-9")
    name, done = events[-1]
    assert name == "done"
    assert done["cost"] is None
    assert done["unpriced"] is True
    record = await UsageRecord.objects.aget(message_id=done["message"])
    assert record.unpriced
    assert record.cost is None


async def test_the_users_message_is_saved_before_the_provider_is_called(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    mock_provider.configure(ttft=0.5, reply="late")
    response = await signed_in.post(
        "/api/chat",
        json.dumps(
            {
                "conversation": None,
                "provider": "openai",
                "model": "gpt-4o",
                "message": "Save me first",
            }
        ),
        content_type="application/json",
    )
    # The view has returned; the provider has not answered yet.
    assert await Message.objects.filter(role="user", content="Save me first").aexists()
    assert await Message.objects.filter(role="assistant", status="generating").aexists()
    body = "".join([c.decode() async for c in response.streaming_content])
    assert parse_sse(body)[-1][0] == "done"
    assert not await Message.objects.filter(status="generating").aexists()


async def test_a_provider_error_before_any_token(
    signed_in: Any, alice: Any, mock_provider: Any
) -> None:
    await sync_to_async(keys.provider_key_save)(
        user=alice, provider="openai", key="sk-invalid-000000000000"
    )
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, error = events[-1]
    assert name == "error"
    assert error["code"] == "invalid_key"
    assert "rejected the API key" in error["message"]
    message = await Message.objects.aget(pk=error["message_id"])
    assert message.status == "error"
    assert message.error_code == "invalid_key"
    record = await UsageRecord.objects.aget(message=message)
    assert (record.input_tokens, record.output_tokens, record.estimated) == (0, 0, False)
    assert await Message.objects.filter(role="user").acount() == 1  # nothing lost


async def test_a_cut_stream_keeps_the_partial_reply_marked(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    mock_provider.configure(fault="cut", fault_after_tokens=3, reply="one two three four five")
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, error = events[-1]
    assert name == "error"
    assert error["status"] == "partial"
    assert error["content"] == "one two three"
    message = await Message.objects.aget(pk=error["message_id"])
    assert message.status == "partial"
    assert message.content == "one two three"
    assert message.usage_estimated
    record = await UsageRecord.objects.aget(message=message)
    assert record.estimated
    assert record.output_tokens > 0


async def test_the_same_client_message_id_twice_is_one_message_and_one_call(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    _, events = await chat(
        signed_in, provider="openai", model="gpt-4o", client_message_id="abc-123"
    )
    _, replay = await chat(
        signed_in,
        provider="openai",
        model="gpt-4o",
        client_message_id="abc-123",
        conversation=events[0][1]["conversation"],
    )
    assert names(replay)[-1] == "done"
    assert replay[-1][1]["message"] == events[-1][1]["message"]
    assert len(mock_provider.requests) == 1
    assert await Message.objects.filter(client_message_id="abc-123").acount() == 1
    assert await UsageRecord.objects.acount() == 1


async def test_a_second_send_while_one_streams_gets_409(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    conversation = events[0][1]["conversation"]
    mock_provider.configure(ttft=0.3)
    slow = await signed_in.post(
        "/api/chat",
        json.dumps(
            {
                "conversation": conversation,
                "provider": "openai",
                "model": "gpt-4o",
                "message": "one",
            }
        ),
        content_type="application/json",
    )
    second, _ = await chat(
        signed_in, provider="openai", model="gpt-4o", conversation=conversation, message="two"
    )
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "busy"
    "".join([c.decode() async for c in slow.streaming_content])
    contents = [m.content async for m in Message.objects.filter(role="user").order_by("id")]
    assert contents == ["Hello", "one"]  # the history never forked
    third, _ = await chat(
        signed_in, provider="openai", model="gpt-4o", conversation=conversation, message="three"
    )
    assert third.status_code == 200


async def test_regenerate_replaces_the_last_reply_and_the_ledger_keeps_both(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    mock_provider.configure(reply="first answer")
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    conversation = events[0][1]["conversation"]
    mock_provider.configure(reply="second answer")
    _, again = await chat(
        signed_in,
        provider="openai",
        model="gpt-4o",
        conversation=conversation,
        regenerate=True,
        message="",
    )
    assert again[-1][1]["content"] == "second answer"
    replies = [m.content async for m in Message.objects.filter(role="assistant")]
    assert replies == ["second answer"]
    assert await Message.objects.filter(role="user").acount() == 1
    assert await UsageRecord.objects.filter(conversation_id=conversation).acount() == 2
    # The last user message was sent again, the old reply not included.
    sent = mock_provider.requests[-1].body["input"]
    assert [m["role"] for m in sent] == ["user"]


async def unfinished_reply(
    conversation_id: int,
    *,
    created: Any = None,
    content: str = "",
    provider: str = "demo",
    model: str = "demo-echo",
) -> Message:
    """An assistant reply still "generating", as a stream whose process died leaves it."""
    return await Message.objects.acreate(
        conversation_id=conversation_id,
        role="assistant",
        status="generating",
        provider=provider,
        model=model,
        key_source="none",
        content=content,
        created=created or timezone.now(),
    )


async def test_a_stale_generating_reply_is_swept(signed_in: Any, alice: Any, settings: Any) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    _, events = await chat(signed_in)
    conversation = await Conversation.objects.aget(pk=events[0][1]["conversation"])
    long_ago = timezone.now() - timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 65)
    stuck = await unfinished_reply(conversation.pk, created=long_ago, content="half a rep")
    await Conversation.objects.filter(pk=conversation.pk).aupdate(
        busy_until=long_ago + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS)
    )
    response = await signed_in.get(f"/api/conversations/{conversation.pk}")
    assert response.status_code == 200
    await stuck.arefresh_from_db()
    assert stuck.status == "generating"  # a GET writes nothing
    # The next message in the conversation sweeps it first.
    again, _ = await chat(signed_in, conversation=conversation.pk, message="still there?")
    assert again.status_code == 200
    await stuck.arefresh_from_db()
    assert stuck.status == "partial"
    assert stuck.error_code == "unavailable"
    assert await UsageRecord.objects.filter(message=stuck, estimated=True).aexists()


async def test_sending_into_a_conversation_a_dead_stream_left_sweeps_it_first(
    signed_in: Any, alice: Any, settings: Any
) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    _, events = await chat(signed_in)
    conversation = await Conversation.objects.aget(pk=events[0][1]["conversation"])
    long_ago = timezone.now() - timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 65)
    stuck = await unfinished_reply(conversation.pk, created=long_ago, content="half a rep")
    # Its process died: the lock it took has run out but was never cleared.
    await Conversation.objects.filter(pk=conversation.pk).aupdate(
        busy_until=long_ago + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS)
    )
    response, events = await chat(signed_in, conversation=conversation.pk, message="again")
    assert response.status_code == 200
    assert events[-1][0] == "done"
    await stuck.arefresh_from_db()
    assert stuck.status == "partial"


async def test_an_unfinished_reply_is_not_sent_to_the_provider_as_history(
    signed_in: Any, alice: Any, openai_key: None, mock_provider: Any
) -> None:
    _, events = await chat(signed_in, provider="openai", model="gpt-4o", message="first")
    pk = events[0][1]["conversation"]
    # A reply another process left unfinished (not old enough to be swept yet).
    await unfinished_reply(pk, content="half a rep", provider="openai", model="gpt-4o")
    await chat(signed_in, conversation=pk, provider="openai", model="gpt-4o", message="second")
    sent = mock_provider.requests[-1].body["input"]
    assert "half a rep" not in json.dumps(sent)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


async def test_a_turn_names_an_untitled_conversation_and_keeps_a_given_title(
    signed_in: Any, alice: Any, settings: Any
) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    _, events = await chat(signed_in, message="First question")
    pk = events[0][1]["conversation"]
    assert (await Conversation.objects.aget(pk=pk)).title == "First question"
    await Conversation.objects.filter(pk=pk).aupdate(title="My own title")
    _, events = await chat(signed_in, conversation=pk, message="Second question")
    assert events[0][1]["title"] == "My own title"
    assert (await Conversation.objects.aget(pk=pk)).title == "My own title"
    await Conversation.objects.filter(pk=pk).aupdate(title="")
    await chat(signed_in, conversation=pk, message="Third question")
    assert (await Conversation.objects.aget(pk=pk)).title == "Third question"


_TRANSACTION = {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}


@pytest.mark.parametrize("new_conversation", [True, False])
async def test_a_turn_takes_a_bounded_number_of_queries(
    signed_in: Any, alice: Any, openai_key: None, mock_provider: Any, new_conversation: bool
) -> None:
    # Guards the queries before the provider is called (docs/performance.md),
    # for a message sent as the browser sends it (with a client_message_id): the
    # session, the user, the key, the price; the user's row locked and the client
    # id checked; then a new conversation's insert, or an existing one locked,
    # taken and its history read; both messages in one insert; the ledger row. (The
    # reply's save runs on the database threads' own connections, not counted here.)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    pk = None if new_conversation else events[0][1]["conversation"]

    def turn() -> tuple[int, str]:
        from asgiref.sync import async_to_sync

        with CaptureQueriesContext(connection) as queries:
            _, done = async_to_sync(chat)(
                signed_in,
                conversation=pk,
                provider="openai",
                model="gpt-4o",
                client_message_id="bounded-2",
            )
        statements = [q["sql"] for q in queries.captured_queries]
        return len([q for q in statements if q.split()[0] not in _TRANSACTION]), done[-1][0]

    count, last = await sync_to_async(turn, thread_sensitive=True)()
    assert last == "done"

    # The same queries on every database; the call's ledger row opened last.
    assert count == (9 if new_conversation else 11)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"provider": "nope"}, 400, "unknown_provider"),
        ({"provider": None}, 400, "required"),
        ({"model": ""}, 400, "invalid"),
        ({"message": "   "}, 400, "required"),
        ({"message": 42}, 400, "invalid"),
        ({"conversation": "abc"}, 400, "invalid"),
        ({"conversation": 999999}, 404, None),
        ({"message": "x" * 100_001}, 413, "message_too_long"),
        ({"client_message_id": "no spaces allowed"}, 400, "invalid"),
        ({"provider": "anthropic", "model": "claude-opus-4-5"}, 400, "no_key"),
    ],
)
async def test_refusals_are_clear_json_errors_and_save_nothing(
    signed_in: Any, body: dict[str, Any], status: int, code: str | None
) -> None:
    response, events = await chat(signed_in, **body)
    assert response.status_code == status
    assert events == []
    if code:
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
    assert not await Message.objects.aexists()


async def test_malformed_and_oversized_bodies(signed_in: Any) -> None:
    bad = await signed_in.post("/api/chat", "{nope", content_type="application/json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"
    huge = await signed_in.post(
        "/api/chat", "x" * (1024 * 1024 + 10), content_type="application/json"
    )
    assert huge.status_code == 413


async def test_no_key_error_names_the_keys_page(signed_in: Any) -> None:
    response, _ = await chat(signed_in, provider="google", model="gemini-2.5-flash")
    assert "keys page" in response.json()["error"]["message"]


async def test_anonymous_gets_401(async_client: Any) -> None:
    response, _ = await chat(async_client)
    assert response.status_code == 401


async def test_another_users_conversation_is_404(
    signed_in: Any, bob: Any, async_client: Any
) -> None:
    theirs = await Conversation.objects.acreate(user=bob, provider="demo", model="demo-echo")
    response, _ = await chat(signed_in, conversation=theirs.pk)
    assert response.status_code == 404
    assert not await Message.objects.aexists()


async def test_the_sweep_command(signed_in: Any, alice: Any, settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    conversation = await Conversation.objects.acreate(
        user=alice, provider="demo", model="demo-echo"
    )
    await Message.objects.acreate(conversation=conversation, role="user", content="hi")
    long_ago = timezone.now() - timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 61)
    await unfinished_reply(conversation.pk, created=long_ago)
    fresh = await unfinished_reply(conversation.pk)
    out = StringIO()
    await sync_to_async(call_command)("sweep_streams", stdout=out)
    assert "Closed 1 interrupted reply." in out.getvalue()
    assert await Message.objects.filter(status="error").acount() == 1
    await fresh.arefresh_from_db()
    assert fresh.status == "generating"  # still within the limit


async def test_the_chat_turn_is_logged_with_its_request_id_and_no_content(
    signed_in: Any, settings: Any, caplog: Any
) -> None:
    import logging

    settings.DEMO_TOKEN_DELAY = 0
    with caplog.at_level(logging.INFO):
        response, _ = await chat(signed_in, message="A secret question")
    turn = next(r for r in caplog.records if r.getMessage() == "chat turn")
    assert turn.request_id == response["X-Request-ID"]
    assert turn.provider == "demo"
    assert turn.outcome == "complete"
    assert turn.cost == "0.000000"
    assert "A secret question" not in caplog.text


async def test_each_turn_is_counted_in_the_metrics(signed_in: Any, settings: Any) -> None:
    from prometheus_client import REGISTRY

    settings.DEMO_TOKEN_DELAY = 0
    labels = {"provider": "demo", "model": "demo-echo", "outcome": "complete"}

    def turns() -> float:
        return REGISTRY.get_sample_value("llmchat_chat_turns_total", labels) or 0.0

    before = turns()
    await chat(signed_in)
    assert turns() == before + 1
    assert REGISTRY.get_sample_value("llmchat_active_streams") == 0


async def test_api_404s_are_json(signed_in: Any) -> None:
    for url in ["/api/conversations/999999", "/api/conversations/999999/export"]:
        response = await signed_in.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    response, _ = await chat(signed_in, conversation=999999)
    assert response.json()["error"]["code"] == "not_found"


async def test_absurd_dates_and_nul_characters_are_400s(signed_in: Any) -> None:
    assert (await signed_in.get("/api/usage?until=9999-12-31")).status_code == 400
    response, _ = await chat(signed_in, message="nul \x00 inside")
    assert response.status_code == 400
    assert (await signed_in.get("/api/conversations?q=a%00b")).status_code == 200


async def test_a_swept_turn_finishing_late_does_not_unlock_a_newer_turn(
    signed_in: Any, alice: Any, settings: Any
) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    turn = await sync_to_async(turns.chat_start)(
        user=alice, conversation_id=None, provider="demo", model="demo-echo", message="one"
    )
    await Message.objects.filter(pk=turn.assistant_message.pk).aupdate(
        status="partial"
    )  # as if the sweeper had closed it
    locked_until = timezone.now() + timedelta(minutes=5)
    await Conversation.objects.filter(pk=turn.conversation.pk).aupdate(busy_until=locked_until)
    assert isinstance(turn, turns.Turn)
    await sync_to_async(turns.chat_finish)(
        turn=turn, text="late", status="complete", usage=None, usage_final=False
    )
    conversation = await Conversation.objects.aget(pk=turn.conversation.pk)
    assert conversation.busy_until == locked_until


async def test_a_filtered_reply_keeps_the_providers_own_usage(
    signed_in: Any, openai_key: None, mock_provider: Any
) -> None:
    mock_provider.configure(fault="filter", input_tokens=50)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, body = events[-1]
    assert name == "error"
    assert body["code"] == "content_filtered"
    assert body["input_tokens"] == 50
    assert body["usage_estimated"] is False


async def test_a_reply_is_cut_before_the_sweeper_could_take_it_for_dead(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any
) -> None:
    settings.CHAT_STREAM_MAX_SECONDS = 31  # the stream stops itself after 1 s
    mock_provider.configure(reply_tokens=100, tokens_per_second=10)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, body = events[-1]
    assert name == "error"
    assert body["code"] == "timeout"
    assert body["status"] == "partial"
    assert 0 < len(body["content"].split()) < 100
    assert (await Conversation.objects.aget(pk=events[0][1]["conversation"])).busy_until is None


@pytest.mark.parametrize("flush", [0.05, 0])
async def test_a_page_that_asks_gets_the_reply_so_far_as_sanitized_html(
    signed_in: Any,
    openai_key: None,
    mock_provider: Any,
    settings: Any,
    monkeypatch: Any,
    flush: float,
) -> None:
    settings.CHAT_STREAM_FLUSH_SECONDS = flush
    monkeypatch.setattr(streaming, "RENDER_SECONDS", 0.1)
    reply = (
        "Some **bold** words <script>alert(1)</script> and `code` " + "more words " * 20 + "end."
    )
    mock_provider.configure(reply=reply, tokens_per_second=60)  # ~0.8 s
    _, events = await chat(signed_in, provider="openai", model="gpt-4o", render=True)
    text, seen = "", 0
    renders = []
    for name, data in events:
        if name == "delta":
            text += data["text"]
        elif name == "render":
            # Each rendering covers text the client already has, and moves on.
            assert seen < data["offset"] <= len(text)
            seen = data["offset"]
            renders.append(data)
    assert text == events[-1][1]["content"] == reply
    assert len(renders) >= 2
    assert all("<script" not in r["html"] for r in renders)
    assert "<strong>bold</strong>" in renders[-1]["html"]
    assert events[-1][0] == "done"


async def test_no_renderings_unless_asked(
    signed_in: Any, openai_key: None, mock_provider: Any, settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(streaming, "RENDER_SECONDS", 0.05)
    mock_provider.configure(reply="Some **bold** words " * 10, tokens_per_second=100)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    assert "render" not in names(events)
    response, _ = await chat(signed_in, provider="openai", model="gpt-4o", render="yes")
    assert response.status_code == 400
