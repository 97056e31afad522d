"""llmchat.db: update_returning, an UPDATE that reads its rows back, in one query.

It relies on a Django internal (QuerySet._update with returning_fields); these
tests run on SQLite in `make test` and on PostgreSQL in CI, and fail if an
upgrade changes it."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Case, F, Value, When
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Conversation
from llmchat.db import update_returning

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
