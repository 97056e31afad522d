"""llmchat.db: update_returning, an UPDATE that reads its rows back, in one query;
take_and_add, a row taken, children added and a read, in one round trip (PostgreSQL).

It relies on a Django internal (QuerySet._update with returning_fields); these
tests run on SQLite in `make test` and on PostgreSQL in CI, and fail if an
upgrade changes it."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    ProgrammingError,
    connection,
    transaction,
)
from django.db.models import Case, F, Q, Value, When
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg.pq import TransactionStatus

from conversations.models import Conversation, Message
from llmchat.db import take_and_add, update_returning

pytestmark = pytest.mark.django_db


def conversation(user: Any, **fields: Any) -> Conversation:
    return Conversation.objects.create(user=user, provider="demo", model="demo-echo", **fields)


def test_the_changed_rows_come_back_whole_in_one_query(alice: Any) -> None:
    c = conversation(alice, title="", system_prompt="be brief")
    later = timezone.now() + timedelta(minutes=5)
    with CaptureQueriesContext(connection) as queries:
        rows = update_returning(
            Conversation.objects.filter(pk=c.pk),
            busy_until=later,
            model="gpt-4o",
            title=Case(When(title="", then=Value("Named")), default=F("title")),
        )
    assert len(queries) == 1
    assert queries[0]["sql"].startswith("UPDATE")
    assert "RETURNING" in queries[0]["sql"]
    [row] = rows
    assert isinstance(row, Conversation)
    assert row.pk == c.pk
    assert row.busy_until == later  # converted to an aware datetime on both databases
    assert row.model == "gpt-4o"
    assert row.title == "Named"  # the expression's result, not the expression
    assert row.system_prompt == "be brief"  # untouched fields too
    assert row.user_id == alice.pk
    assert row.created == c.created
    assert not row._state.adding
    c.refresh_from_db()
    assert (c.model, c.title, c.busy_until) == ("gpt-4o", "Named", later)


def test_nothing_matched_is_an_empty_list_and_no_change(alice: Any, bob: Any) -> None:
    c = conversation(alice, title="Kept")
    assert update_returning(Conversation.objects.filter(pk=c.pk, user=bob), title="Taken") == []
    c.refresh_from_db()
    assert c.title == "Kept"


def test_every_matched_row_comes_back(alice: Any) -> None:
    first, second = conversation(alice, title="a"), conversation(alice, title="b")
    rows = update_returning(Conversation.objects.filter(user=alice), model="m2")
    assert sorted((r.pk, r.model) for r in rows) == [(first.pk, "m2"), (second.pk, "m2")]


# --- take_and_add (PostgreSQL) ------------------------------------------------------

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="take_and_add is PostgreSQL's (psycopg pipeline)"
)


def take(c: Conversation, *children: Message, then: Any = None) -> Any:
    now = timezone.now()
    return take_and_add(
        Conversation.objects.filter(pk=c.pk, busy_until__isnull=True),
        {
            "busy_until": now + timedelta(minutes=5),
            "title": Case(When(title="", then=Value("Named")), default=F("title")),
        },
        children=list(children),
        link="conversation",
        then=then
        if then is not None
        else Message.objects.filter(conversation_id=c.pk).values_list("id", "role", "content"),
    )


def messages(*contents: str, client_id: str = "") -> list[Message]:
    now = timezone.now()
    return [
        Message(
            role="user" if i % 2 == 0 else "assistant",
            content=text,
            created=now,
            client_message_id=client_id if i == 0 else "",
        )
        for i, text in enumerate(contents)
    ]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_take_and_add_takes_adds_and_reads_in_one_committed_transaction(alice: Any) -> None:
    c = conversation(alice, title="")
    Message.objects.create(conversation=c, role="user", content="Earlier")
    first, second = messages("Hi", "")
    with CaptureQueriesContext(connection) as queries:
        taken, rows = take(c, first, second)
    # Two statements: the taking and the inserting in one, then the read.
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["WITH", "SELECT"]
    assert isinstance(taken, Conversation)
    assert taken.pk == c.pk
    assert taken.title == "Named"  # the expression's result
    assert taken.busy_until is not None
    assert taken.user_id == alice.pk
    # The children: saved, in order, linked; the read sees them.
    assert first.pk < second.pk
    assert (first.conversation_id, second.conversation_id) == (c.pk, c.pk)
    assert not first._state.adding
    assert [r[1:] for r in rows] == [("user", "Earlier"), ("user", "Hi"), ("assistant", "")]
    assert [r[0] for r in rows[1:]] == [first.pk, second.pk]
    # Committed, seen from another connection; this one is idle again.
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    with psycopg.connect(connection.connection.info.dsn) as other:
        busy = other.execute(
            "SELECT busy_until FROM conversations_conversation WHERE id = %s", [c.pk]
        ).fetchone()
        count = other.execute(
            "SELECT count(*) FROM conversations_message WHERE conversation_id = %s", [c.pk]
        ).fetchone()
    assert busy is not None
    assert busy[0] == taken.busy_until
    assert count == (3,)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_take_and_add_adds_nothing_when_nothing_matched(alice: Any) -> None:
    c = conversation(alice, title="Kept", busy_until=timezone.now())  # taken already
    first, second = messages("Hi", "")
    assert take(c, first, second) == (None, [])
    assert first.pk is None
    assert second.pk is None
    assert not Message.objects.filter(conversation=c).exists()
    c.refresh_from_db()
    assert c.title == "Kept"


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_failing_read_rolls_the_taking_back(alice: Any) -> None:
    c = conversation(alice, title="")
    broken = Message.objects.extra(where=["no_such_column = 1"]).values_list("id")
    with pytest.raises(ProgrammingError):
        take(c, *messages("Hi", ""), then=broken)
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    c.refresh_from_db()
    assert (c.busy_until, c.title) == (None, "")
    assert not Message.objects.filter(conversation=c).exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_unique_constraint_is_djangos_integrity_error_and_nothing_changes(alice: Any) -> None:
    c = conversation(alice, title="")
    Message.objects.create(conversation=c, role="user", content="One", client_message_id="m-1")
    with pytest.raises(IntegrityError):
        take(c, *messages("Again", "", client_id="m-1"))
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    c.refresh_from_db()
    assert c.busy_until is None
    assert Message.objects.filter(conversation=c).count() == 1


@postgres_only
def test_inside_a_transaction_a_failure_leaves_it_usable(alice: Any) -> None:
    c = conversation(alice, title="")
    Message.objects.create(conversation=c, role="user", content="One", client_message_id="m-1")
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            take(c, *messages("Again", "", client_id="m-1"))
        c.refresh_from_db()  # the transaction goes on (a savepoint was rolled back)
        assert c.busy_until is None
        taken, rows = take(c, *messages("Two", ""))
    assert taken is not None
    assert len(rows) == 3


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_value_too_long_fails_as_in_the_orm_and_is_not_cut(alice: Any) -> None:
    c = conversation(alice, title="")
    first, second = messages("Hi", "")
    second.model = "m" * 201  # max_length=200
    with pytest.raises(DataError):
        take(c, first, second)
    c.refresh_from_db()
    assert c.busy_until is None
    assert not Message.objects.filter(conversation=c).exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_is_djangos_error(alice: Any) -> None:
    c = conversation(alice, title="")
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    with pytest.raises(DatabaseError) as raised:
        take(c, *messages("Hi", ""))
    assert not isinstance(raised.value, psycopg.Error)  # Django's, not psycopg's
    assert connection.errors_occurred  # Django closes it as unusable
    connection.close()
    c.refresh_from_db()  # a new connection: nothing was taken
    assert c.busy_until is None


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_also_updates_only_when_the_row_was_taken_whatever_its_filter(alice: Any) -> None:
    busy = conversation(alice, title="", busy_until=timezone.now())
    free = conversation(alice, title="")
    others = [conversation(alice, title="a"), conversation(alice, title="b")]
    # An OR in the other update's filter: the guard must hold for all of it.
    also = (Conversation.objects.filter(Q(pk=others[0].pk) | Q(pk=others[1].pk)), {"model": "m2"})

    def take_with_also(c: Conversation) -> Any:
        return take_and_add(
            Conversation.objects.filter(pk=c.pk, busy_until__isnull=True),
            {"busy_until": timezone.now()},
            children=messages("Hi"),
            link="conversation",
            also=also,
        )

    assert take_with_also(busy) == (None, [])
    assert sorted(Conversation.objects.filter(model="m2").values_list("pk", flat=True)) == []
    taken, rows = take_with_also(free)
    assert taken is not None
    assert rows == []  # nothing to read without `then`
    assert sorted(Conversation.objects.filter(model="m2").values_list("pk", flat=True)) == sorted(
        o.pk for o in others
    )
    assert Message.objects.filter(conversation=free).count() == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_every_kind_of_value_is_saved_as_the_orm_would(alice: Any) -> None:
    c = conversation(alice, title="")
    created = timezone.now() - timedelta(days=400, microseconds=7)
    reply = Message(
        role="assistant",
        content='Line one\nline two \\ "quoted" ünïcödé 🙂',
        status="partial",
        provider="openai",
        model="gpt-4o",
        key_source="user",
        input_tokens=12,
        cached_tokens=3,
        output_tokens=2**31 - 1,
        usage_estimated=True,
        cost=Decimal("0.000123"),
        latency_ms=None,
        error_code="",
        created=created,
    )
    taken, _ = take(c, reply)
    assert taken is not None
    saved = Message.objects.get(pk=reply.pk)
    for field in Message._meta.concrete_fields:
        if field.name not in ("id", "conversation"):
            assert getattr(saved, field.attname) == getattr(reply, field.attname), field.name
    assert saved.created == created
    assert saved.cost == Decimal("0.000123")
