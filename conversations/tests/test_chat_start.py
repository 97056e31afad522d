"""chat_start's queries: the few round trips on the way to the provider's first
token, and the unusual cases (a retry, a busy, stale or foreign conversation)
found after the fact instead of asked about on every turn."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import turns
from conversations.models import Conversation, Message, UsageRecord
from conversations.tests.helpers import start
from providers import keys
from providers.base import Usage
from providers.models import ProviderKey

pytestmark = pytest.mark.django_db

_TRANSACTION = {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK"}


@pytest.fixture
def keyed(alice: Any, prices: None) -> Any:
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-0000000000000000")
    # Used a moment ago: its last_used is not written again on this turn.
    ProviderKey.objects.filter(user=alice).update(last_used=timezone.now())
    return alice


def finish(turn: turns.Turn) -> None:
    turns.chat_finish(
        turn=turn,
        text="Hello!",
        status="complete",
        usage=Usage(input_tokens=10, output_tokens=5),
        usage_final=True,
    )
    turns.release_turn(turn)


def statements(queries: CaptureQueriesContext) -> list[str]:
    """Each query as its verb and table, e.g. 'UPDATE conversations_conversation'."""
    kinds = []
    for query in queries.captured_queries:
        sql = query["sql"]
        verb = sql.split()[0]
        if verb in _TRANSACTION:
            continue
        marker = {"SELECT": " FROM ", "UPDATE": "UPDATE ", "INSERT": "INSERT INTO "}[verb]
        table = sql.split(marker, 1)[1].split()[0].strip('"')
        kinds.append(f"{verb} {table}" + (" RETURNING" if " RETURNING " in sql else ""))
    return kinds


def test_continuing_a_conversation_takes_few_queries_after_the_key(keyed: Any) -> None:
    first = start(keyed, message="One", client_message_id="m-1")
    finish(first)
    pk = first.conversation.pk
    with CaptureQueriesContext(connection) as queries:
        turn = start(keyed, conversation_id=pk, message="Two", client_message_id="m-2")
    assert statements(queries) == [
        "SELECT providers_providerkey",
        "SELECT pricing_modelprice",  # the price, also what the finish uses
        "SELECT accounts_user",  # locked: a second send of this message id waits here
        "SELECT conversations_message",  # was this message id sent before?
        "SELECT conversations_conversation",  # locked, to be taken
        "UPDATE conversations_conversation",  # taken (busy_until), updated for the turn
        "SELECT conversations_message",  # the history
        "INSERT conversations_message RETURNING",  # the user's message and the reply's row
        "INSERT conversations_usagerecord RETURNING",  # the call, opened
    ]
    assert turn.conversation.pk == pk
    assert turn.conversation.title == "One"  # named by its first message, kept
    assert turn.conversation.busy_until is not None
    assert [(m.role, m.content) for m in turn.request.messages] == [
        ("user", "One"),
        ("assistant", "Hello!"),
        ("user", "Two"),
    ]
    assert turn.user_message is not None
    assert turn.user_message.pk < turn.assistant_message.pk
    saved = list(Message.objects.filter(conversation_id=pk).values_list("role", "status"))
    assert saved[-2:] == [("user", "complete"), ("assistant", "generating")]
    assert Message.objects.get(pk=turn.user_message.pk).client_message_id == "m-2"


def test_starting_a_conversation_checks_the_client_id_under_the_users_lock(keyed: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        turn = start(keyed, message="One", client_message_id="m-1")
    kinds = statements(queries)
    assert kinds == [
        "SELECT providers_providerkey",
        "SELECT pricing_modelprice",
        "SELECT accounts_user",  # FOR UPDATE (PostgreSQL): two requests with one id wait
        "SELECT conversations_message",  # the id used in any of the user's conversations?
        "INSERT conversations_conversation RETURNING",
        "INSERT conversations_message RETURNING",
        "INSERT conversations_usagerecord RETURNING",
    ]
    if connection.vendor == "postgresql":
        [lock] = [q["sql"] for q in queries.captured_queries if '"accounts_user"' in q["sql"]]
        assert lock.endswith("FOR UPDATE")
    assert turn.conversation.title == "One"


def test_a_retry_in_its_conversation_is_answered_again_not_twice(keyed: Any, settings: Any) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    first = start(keyed, message="One")
    finish(first)
    pk = first.conversation.pk
    asked = start(keyed, conversation_id=pk, message="Two", client_message_id="r-1")
    finish(asked)
    # The client never saw the reply and sends the message again.
    again = start(keyed, conversation_id=pk, message="Two", client_message_id="r-1")
    assert isinstance(again, turns.Replay)
    assert again.assistant_message.pk == asked.assistant_message.pk
    assert Message.objects.filter(conversation_id=pk).count() == 4
    assert Conversation.objects.get(pk=pk).busy_until is None  # taking it was rolled back
    # The replay gave its stream slot back: the next message starts.
    finish(start(keyed, conversation_id=pk, message="Three", client_message_id="r-2"))


def test_a_retry_while_its_reply_streams_is_in_progress(keyed: Any) -> None:
    first = start(keyed, message="One")
    finish(first)
    pk = first.conversation.pk
    start(keyed, conversation_id=pk, message="Two", client_message_id="r-1")  # streaming
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, conversation_id=pk, message="Two", client_message_id="r-1")
    assert (exc.value.status, exc.value.code) == (409, "in_progress")
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, conversation_id=pk, message="Other", client_message_id="r-2")
    assert (exc.value.status, exc.value.code) == (409, "busy")
    assert Message.objects.filter(conversation_id=pk).count() == 4


def test_a_retry_is_answered_again_even_once_the_budget_is_spent(keyed: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "5"
    asked = start(keyed, message="One", client_message_id="r-1")
    finish(asked)
    UsageRecord.objects.filter(message=asked.assistant_message).update(cost=Decimal("5"))
    again = start(keyed, message="One", client_message_id="r-1")
    assert isinstance(again, turns.Replay)
    assert again.assistant_message.pk == asked.assistant_message.pk
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, message="Something new", client_message_id="r-2")
    assert exc.value.code == "budget_exceeded"


def test_someone_elses_or_a_missing_conversation_is_404_and_untouched(keyed: Any, bob: Any) -> None:
    theirs = Conversation.objects.create(user=bob, title="Bob's", provider="demo", model="x")
    for pk in (theirs.pk, theirs.pk + 1000):
        with pytest.raises(Http404):
            start(keyed, conversation_id=pk, message="Mine now?")
    theirs.refresh_from_db()
    assert (theirs.model, theirs.busy_until, theirs.title) == ("x", None, "Bob's")
    assert not Message.objects.exists()


def test_a_conversation_a_dead_stream_left_is_swept_then_taken(keyed: Any, settings: Any) -> None:
    first = start(keyed, message="One")
    pk = first.conversation.pk
    # Its process died: the reply stayed "generating", the taking ran out.
    long_ago = timezone.now() - timedelta(seconds=settings.CHAT_STREAM_MAX_SECONDS + 65)
    Message.objects.filter(pk=first.assistant_message.pk).update(created=long_ago)
    Conversation.objects.filter(pk=pk).update(busy_until=timezone.now() - timedelta(seconds=1))
    turn = start(keyed, conversation_id=pk, message="Two")
    assert turn.conversation.pk == pk
    assert Message.objects.get(pk=first.assistant_message.pk).status == "error"
    # A taking that has not run out is respected.
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, conversation_id=pk, message="Three")
    assert exc.value.code == "busy"


def failing_history(conversation: Any, **kwargs: Any) -> Any:
    """For turns._history: reading the history fails in the database, after the
    conversation was taken."""
    return list(Message.objects.filter(pk=conversation.pk).extra(where=["no_such_column = 1"]))


def test_a_failure_after_taking_the_conversation_leaves_it_free(
    keyed: Any, monkeypatch: Any
) -> None:
    first = start(keyed, message="One")
    finish(first)
    pk = first.conversation.pk

    monkeypatch.setattr(turns, "_history", failing_history)
    with pytest.raises(DatabaseError):
        start(keyed, conversation_id=pk, message="Two")
    assert Conversation.objects.get(pk=pk).busy_until is None  # free for the next message
    assert Message.objects.filter(conversation_id=pk).count() == 2
    monkeypatch.undo()
    finish(start(keyed, conversation_id=pk, message="Two"))


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_turn_commits_and_a_failure_rolls_back(
    keyed: Any, monkeypatch: Any
) -> None:
    # As in production (no test transaction around it): a transaction of its own.
    first = start(keyed, message="One")
    finish(first)
    pk = first.conversation.pk
    asked = start(keyed, conversation_id=pk, message="Two", client_message_id="t-1")
    assert not connection.in_atomic_block
    assert [m.content for m in asked.request.messages] == ["One", "Hello!", "Two"]
    finish(asked)
    again = start(keyed, conversation_id=pk, message="Two", client_message_id="t-1")
    assert isinstance(again, turns.Replay)  # the client id seen, answered again
    assert again.assistant_message.pk == asked.assistant_message.pk

    monkeypatch.setattr(turns, "_history", failing_history)
    with pytest.raises(DatabaseError):
        start(keyed, conversation_id=pk, message="Three")
    monkeypatch.undo()
    assert not connection.in_atomic_block
    assert Conversation.objects.get(pk=pk).busy_until is None
    assert Message.objects.filter(conversation_id=pk).count() == 4
    assert UsageRecord.objects.count() == 2  # nor was the third call opened
    finish(start(keyed, conversation_id=pk, message="Three"))


@pytest.mark.django_db(transaction=True)
def test_finishing_a_turn_saves_the_reply_settles_its_call_and_frees_the_conversation(
    keyed: Any,
) -> None:
    turn = start(keyed, message="One")
    opened = UsageRecord.objects.get()
    assert (opened.outcome, opened.estimated, opened.output_tokens) == ("generating", True, 0)
    with CaptureQueriesContext(connection) as queries:
        finish(turn)
    # In one transaction, at the price the turn started with; the conversation and
    # the ledger row locked first, in the order a deletion locks them.
    assert statements(queries) == [
        "SELECT conversations_conversation",
        "SELECT conversations_usagerecord",
        "UPDATE conversations_message",
        "UPDATE conversations_usagerecord",
        "UPDATE conversations_conversation",
    ]
    reply = Message.objects.get(pk=turn.assistant_message.pk)
    row = UsageRecord.objects.get(message=reply)
    assert (reply.status, reply.content, reply.output_tokens) == ("complete", "Hello!", 5)
    assert (row.input_tokens, row.output_tokens, row.outcome) == (10, 5, "complete")
    assert row.cost is not None
    assert row.cost == reply.cost
    assert row.price_id == reply.price_id is not None
    assert row.user_id == keyed.pk
    assert row.conversation_id == turn.conversation.pk
    assert row.reply_id == reply.pk
    assert Conversation.objects.get(pk=turn.conversation.pk).busy_until is None
    # A second finish (the sweeper's, say) changes nothing and frees nothing.
    Conversation.objects.filter(pk=turn.conversation.pk).update(busy_until=timezone.now())
    turns.chat_finish(turn=turn, text="Other", status="partial", usage=None, usage_final=False)
    assert UsageRecord.objects.filter(message=reply).count() == 1
    assert Message.objects.get(pk=reply.pk).content == "Hello!"
    assert Conversation.objects.get(pk=turn.conversation.pk).busy_until is not None
