"""Every call reaches the ledger, whatever happens meanwhile: the conversation or
the account deleted while the reply streams (from the API or the admin), numbers
and text from the provider that no database takes, a save that fails."""

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import DataError
from django.test import Client

from conversations import services, turns
from conversations.models import Conversation, Message, UsageRecord
from conversations.tests.helpers import chat, start
from conversations.tests.test_reattach import session_for
from providers import keys
from providers.base import MAX_TOKENS, ProviderError, Usage

BODY = {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "Go on"}


def stream_while(http: Any, action: Callable[[int], None]) -> list[tuple[str, dict[str, Any]]]:
    """POST /api/chat and read its events to the end, calling `action(conversation)`
    once the reply is streaming."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with http.stream("POST", "/api/chat", json=BODY) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if sum(n == "delta" for n, _ in events) == 3:
                    action(events[0][1]["conversation"])
    return events


@pytest.fixture
def allowance(settings: Any, mock_provider: Any) -> None:
    """The server's OpenAI key with a cent of allowance a month, and replies that
    cost more than that (10,000 input tokens of gpt-4o: $0.025)."""
    settings.OPENAI_API_KEY = "sk-server-0000000000000000"
    settings.SERVER_KEY_MONTHLY_BUDGET = "0.01"
    mock_provider.configure(input_tokens=10_000, reply_tokens=40, tokens_per_second=40)


def assert_recorded_after_deletion(events: list[tuple[str, dict[str, Any]]]) -> UsageRecord:
    name, final = events[-1]
    assert name == "done"  # the client hears how the turn ended
    assert final["status"] == "complete"
    record = UsageRecord.objects.get()
    assert record.reply_id == final["message"]
    assert (record.conversation, record.message) == (None, None)
    assert record.outcome == "complete"
    assert record.input_tokens == 10_000
    assert record.cost == Decimal("0.025400")  # 10k in at $2.50, 40 out at $10 per 1M
    assert record.key_source == "server"
    return record


@pytest.mark.django_db(transaction=True)
def test_deleting_the_conversation_while_its_reply_streams_keeps_the_call_in_the_ledger(
    asgi_live_server: Any, alice: Any, allowance: None, prices: None
) -> None:
    http = session_for(alice, asgi_live_server.url)
    other_tab = session_for(alice, asgi_live_server.url)

    def delete(conversation: int) -> None:
        assert other_tab.delete(f"/api/conversations/{conversation}").json() == {"deleted": True}

    events = stream_while(http, delete)
    record = assert_recorded_after_deletion(events)
    assert record.user == alice
    assert not Conversation.objects.exists()
    # The allowance saw the call: the next one is refused, not admitted for free.
    again = http.post("/api/chat", json=BODY)
    assert again.status_code == 402
    assert again.json()["error"]["code"] == "server_budget_exceeded"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("what", ["conversation", "account"])
def test_the_admins_delete_while_a_reply_streams_keeps_the_call_in_the_ledger(
    asgi_live_server: Any, alice: Any, staff: Any, allowance: None, prices: None, what: str
) -> None:
    operator = Client()
    operator.force_login(staff)

    def delete(conversation: int) -> None:
        page = {
            "conversation": f"/admin/conversations/conversation/{conversation}/delete/",
            "account": f"/admin/accounts/user/{alice.pk}/delete/",
        }[what]
        assert operator.post(page, {"post": "yes"}).status_code == 302

    events = stream_while(session_for(alice, asgi_live_server.url), delete)
    record = assert_recorded_after_deletion(events)
    # A deleted account's calls are kept by email.
    assert record.user == (alice if what == "conversation" else None)
    assert record.user_email == "alice@example.com"


@pytest.fixture
def keyed(alice: Any, prices: None) -> Any:
    keys.provider_key_save(user=alice, provider="openai", key="sk-own-00000000000000000")
    return alice


def finish(turn: turns.Turn, **kwargs: Any) -> Message:
    reply: dict[str, Any] = {
        "text": "Hello!",
        "status": "complete",
        "usage": Usage(input_tokens=1000, output_tokens=100),
        "usage_final": True,
    }
    reply.update(kwargs)
    try:
        return turns.chat_finish(turn=turn, **reply)
    finally:
        turns.release_turn(turn)


@pytest.mark.django_db
def test_a_deleted_turn_is_recorded_once_however_often_it_is_finished(keyed: Any) -> None:
    turn = start(keyed)
    services.conversation_delete(user=keyed, pk=turn.conversation.pk)
    first = finish(turn)
    again = finish(turn)
    assert first.pk == again.pk == turn.assistant_message.pk
    assert first.cost == Decimal("0.003500")
    assert UsageRecord.objects.count() == 1


@pytest.mark.django_db
def test_a_reply_finished_before_its_conversation_was_deleted_is_not_recorded_twice(
    keyed: Any,
) -> None:
    turn = start(keyed)
    finish(turn)
    services.conversation_delete(user=keyed, pk=turn.conversation.pk)
    finish(turn, text="Again")  # a late second finish: the call is in the ledger already
    assert UsageRecord.objects.count() == 1


@pytest.mark.django_db
def test_a_reply_deleted_on_its_own_frees_its_conversation(keyed: Any) -> None:
    turn = start(keyed)
    Message.objects.filter(pk=turn.assistant_message.pk).delete()
    finish(turn)
    conversation = Conversation.objects.get()
    assert conversation.busy_until is None
    assert UsageRecord.objects.get().conversation == conversation


@pytest.mark.django_db
def test_counts_beyond_what_the_database_holds_are_saved_at_the_bound(keyed: Any) -> None:
    huge = Usage(input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS, reasoning_tokens=MAX_TOKENS)
    message = finish(start(keyed), usage=huge)
    message.refresh_from_db()
    assert (message.status, message.input_tokens, message.output_tokens) == (
        "complete",
        MAX_TOKENS,
        MAX_TOKENS,
    )
    assert UsageRecord.objects.get().output_tokens == MAX_TOKENS


@pytest.mark.django_db
def test_a_reply_the_renderer_fails_on_is_kept_as_plain_text(
    keyed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(turns, "render_markdown", broken)
    message = finish(start(keyed), text="<b>Bold</b>\n\nand more")
    message.refresh_from_db()
    assert message.status == "complete"
    assert message.html == "<p>&lt;b&gt;Bold&lt;/b&gt;</p>\n\n<p>and more</p>"


def fail_saves(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """The next `times` saves of a reply fail as the database would refuse a value."""
    real = turns._save_reply
    calls: list[str] = []

    def save(turn: turns.Turn, reply: dict[str, Any], settled: Any, **kwargs: Any) -> Any:
        calls.append(reply["status"])
        if len(calls) <= times:
            raise DataError("value out of range")
        return real(turn, reply, settled, **kwargs)

    monkeypatch.setattr(turns, "_save_reply", save)
    return calls


@pytest.mark.django_db
def test_a_reply_that_cannot_be_saved_ends_as_failed_with_its_ledger_row(
    keyed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fail_saves(monkeypatch, times=1)
    turn = start(keyed)
    message = finish(turn, text="Half a repl")
    assert calls == ["complete", "error"]
    message.refresh_from_db()
    assert (message.status, message.error_code) == ("error", "server_error")
    assert message.content == "Half a repl"
    record = UsageRecord.objects.get()
    assert (record.outcome, record.cost) == ("error", Decimal("0.003500"))
    assert Conversation.objects.get().busy_until is None


@pytest.fixture
async def signed_in(async_client: Any, alice: Any) -> Any:
    await async_client.aforce_login(alice)
    return async_client


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_the_client_hears_of_a_save_that_failed(
    signed_in: Any, keyed: Any, mock_provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_saves(monkeypatch, times=1)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, final = events[-1]
    assert (name, final["code"], final["status"]) == ("error", "server_error", "error")
    assert await UsageRecord.objects.acount() == 1


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_the_client_hears_how_the_turn_ended_even_if_no_save_goes_through(
    signed_in: Any, keyed: Any, mock_provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_saves(monkeypatch, times=2)
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, final = events[-1]
    assert (name, final["code"]) == ("error", "server_error")
    assert final["message_id"] == events[0][1]["message"]
    # The stream slot went back: the next message is not refused as "too many".
    monkeypatch.undo()
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    assert events[-1][0] == "done"


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_a_reply_that_ended_before_its_stream_was_read_is_followed_from_its_generation(
    keyed: Any, mock_provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from conversations import streaming

    # Its row stays "generating": the database would never tell a follower it ended.
    fail_saves(monkeypatch, times=2)
    turn = await sync_to_async(start)(keyed)
    generation = streaming.start(turn)
    events = streaming.follow(turn.assistant_message)
    assert generation.task is not None
    await generation.task  # over before the follower reads anything

    async def read() -> list[Any]:
        return [event async for event in events]

    followed = await asyncio.wait_for(read(), 5)
    assert isinstance(followed[0], streaming.Text)
    assert followed[-1] == streaming.Ended(None)


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_provider_numbers_and_text_no_database_takes_still_finish_the_turn(
    signed_in: Any, keyed: Any, mock_provider: Any
) -> None:
    mock_provider.configure(
        input_tokens=2**70, chunks=["Smile \ud83d", "\ude00 \x00", " done \udbff"]
    )
    _, events = await chat(signed_in, provider="openai", model="gpt-4o")
    name, final = events[-1]
    assert name == "done"
    assert final["content"] == "Smile \U0001f600 \ufffd done \ufffd"
    assert "\U0001f600" in final["html"]
    message = await Message.objects.aget(pk=final["message"])
    assert message.content == final["content"]
    assert message.input_tokens == MAX_TOKENS
    record = await sync_to_async(UsageRecord.objects.get)()
    assert record.input_tokens == MAX_TOKENS
    assert record.cost == Decimal("5368.709148")  # 2^31-1 in at $2.50 per 1M, 3 out at $10


def sweep_later(monkeypatch: pytest.MonkeyPatch, settings: Any) -> int:
    """The sweeper, run once every stream that started by now is long dead."""
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 61)
    monkeypatch.setattr(timezone, "now", lambda: later)
    return turns.sweep_stale_replies()


@pytest.mark.django_db
def test_a_call_is_in_the_ledger_from_its_start_at_the_input_it_sends(keyed: Any) -> None:
    turn = start(keyed, message="x" * 4000)
    row = UsageRecord.objects.get()
    assert (row.reply_id, row.message, row.outcome) == (
        turn.assistant_message.pk,
        turn.assistant_message,
        "generating",
    )
    assert (row.input_tokens, row.output_tokens, row.estimated) == (1000, 0, True)
    assert row.cost == Decimal("0.002500")  # counts against budgets while in flight


@pytest.mark.django_db
def test_a_dead_workers_call_stays_in_the_ledger_when_its_conversation_goes(
    keyed: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # The process streaming it died, then the conversation was deleted: no finish
    # ever comes, and the sweeper finds no reply to close.
    turn = start(keyed, message="x" * 4000)
    services.conversation_delete(user=keyed, pk=turn.conversation.pk)
    assert sweep_later(monkeypatch, settings) == 1
    row = UsageRecord.objects.get()
    assert (row.outcome, row.estimated, row.input_tokens) == ("error", True, 1000)
    assert row.cost == Decimal("0.002500")


@pytest.mark.django_db
def test_a_stale_reply_dropped_by_a_regenerate_keeps_its_call(
    keyed: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    first = start(keyed, message="x" * 400)
    # Its process died; the conversation's taking expired, but the sweeper's
    # grace has not: a regenerate takes it over and drops the unfinished reply.
    Conversation.objects.update(busy_until=timezone.now() - timedelta(seconds=1))
    again = start(keyed, conversation_id=first.conversation.pk, regenerate=True)
    assert not Message.objects.filter(pk=first.assistant_message.pk).exists()
    finish(again)
    sweep_later(monkeypatch, settings)
    rows = {r.reply_id: r for r in UsageRecord.objects.all()}
    assert rows[first.assistant_message.pk].outcome == "error"
    assert rows[first.assistant_message.pk].input_tokens == 100
    assert rows[again.assistant_message.pk].outcome == "complete"


@pytest.mark.django_db
def test_a_price_a_call_used_cannot_be_deleted(client: Client, staff: Any, keyed: Any) -> None:
    from pricing.models import ModelPrice

    finish(start(keyed))
    price = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    client.force_login(staff)
    page = client.post(f"/admin/pricing/modelprice/{price.pk}/delete/", {"post": "yes"})
    assert page.status_code == 200  # the admin's "cannot delete" page
    assert "Cannot delete model price" in page.content.decode()
    assert ModelPrice.objects.filter(pk=price.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_delete_during_a_finish_waits_for_it_instead_of_deadlocking(
    keyed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from django.db import connections

    from conversations import ledger

    turn = start(keyed, message="x" * 400)
    saving = threading.Event()
    real = ledger.settle
    deleted: list[str] = []

    def slow_settle(**kwargs: Any) -> bool:
        saving.set()  # the finish holds its rows now
        time.sleep(0.5)  # long enough for the delete to come and wait
        return real(**kwargs)

    monkeypatch.setattr(ledger, "settle", slow_settle)

    def delete() -> None:
        saving.wait()
        try:
            services.conversation_delete(user=keyed, pk=turn.conversation.pk)
            deleted.append("ok")
        except Exception as exc:  # a deadlock, say: the API would answer 500
            deleted.append(repr(exc))
        finally:
            connections.close_all()

    thread = threading.Thread(target=delete)
    thread.start()
    finish(turn)
    thread.join()
    assert deleted == ["ok"]
    assert UsageRecord.objects.get().outcome == "complete"
    assert not Conversation.objects.exists()


@pytest.mark.django_db
def test_a_call_that_died_before_its_first_word_keeps_its_input(
    keyed: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Its worker died while the model was still thinking: the input was sent.
    turn = start(keyed, message="x" * 4000)
    assert sweep_later(monkeypatch, settings) == 1
    row = UsageRecord.objects.get()
    assert (row.outcome, row.input_tokens, row.estimated) == ("error", 1000, True)
    assert row.cost == Decimal("0.002500")
    assert Message.objects.get(pk=turn.assistant_message.pk).usage_estimated


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("error", "billed"),
    [
        (ProviderError("timeout"), True),  # no first token in time: it was thinking
        (ProviderError("unavailable"), True),  # cut off without a word
        (ProviderError("overloaded", status=529), False),  # turned away: nothing ran
        (ProviderError("bad_request", status=400), False),
        (ProviderError("unsafe_url"), False),  # never left the server
    ],
)
def test_a_failed_call_without_text_is_billed_unless_it_was_turned_away(
    keyed: Any, error: ProviderError, billed: bool
) -> None:
    message = finish(
        start(keyed, message="x" * 4000),
        text="",
        status="error",
        usage=None,
        usage_final=False,
        error=error,
    )
    assert (message.input_tokens, message.usage_estimated) == (
        (1000, True) if billed else (0, False)
    )
    row = UsageRecord.objects.get()
    assert row.cost == (Decimal("0.002500") if billed else Decimal(0))


@pytest.mark.django_db
def test_a_call_in_flight_counts_against_the_budget(keyed: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "0.002"
    start(keyed, message="x" * 4000)  # sends about $0.0025 of input; still streaming
    with pytest.raises(turns.ChatRefused) as refused:
        start(keyed, message="And another thing")
    assert refused.value.code == "budget_exceeded"
