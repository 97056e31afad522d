"""Budgets and rate limits, checked before each call."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.http import Http404
from django.utils import timezone

from conversations import budgets, turns
from conversations.models import Conversation, Message, UsageRecord
from conversations.tests.helpers import start
from providers import keys
from providers.base import Usage


def spend(
    user: Any, amount: str, *, when: datetime | None = None, key_source: str = "user"
) -> None:
    UsageRecord.objects.create(
        user=user,
        user_email=user.email,
        provider="openai",
        model="gpt-4o",
        key_source=key_source,
        cost=Decimal(amount),
        outcome="complete",
        created=when or timezone.now(),
    )


def finish(turn: turns.Turn, output_tokens: int = 100_000) -> None:
    turns.chat_finish(
        turn=turn,
        text="ok",
        status="complete",
        usage=Usage(input_tokens=1000, output_tokens=output_tokens),
        usage_final=True,
    )
    turns.release_turn(turn)


@pytest.fixture
def keyed(alice: Any, prices: None) -> Any:
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-0000000000000000")
    return alice


@pytest.mark.django_db
def test_over_budget_is_refused_with_the_limit_and_the_reset_date(
    keyed: Any, settings: Any
) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "5"
    spend(keyed, "5.00")
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed)
    assert exc.value.status == 402
    assert exc.value.code == "budget_exceeded"
    assert "$5" in exc.value.message
    assert "resets on" in exc.value.message
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_users_own_limit_overrides_the_default(keyed: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "5"
    spend(keyed, "6.00")
    keyed.monthly_budget = Decimal("10")
    keyed.save()
    start(keyed)  # allowed
    keyed.monthly_budget = None
    keyed.unlimited_budget = True
    keyed.save()
    assert budgets.user_limit(keyed) is None


@pytest.mark.django_db
def test_the_demo_is_never_refused_for_budget(keyed: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "1"
    spend(keyed, "2.00")
    start(keyed, provider="demo", model="demo-echo")


@pytest.mark.django_db
def test_the_server_key_allowance_is_separate(alice: Any, prices: None, settings: Any) -> None:
    settings.OPENAI_API_KEY = "sk-server-0000000000000000"
    settings.SERVER_KEY_MONTHLY_BUDGET = "2"
    spend(alice, "2.00", key_source="server")
    with pytest.raises(turns.ChatRefused) as exc:
        start(alice)
    assert exc.value.status == 402
    assert exc.value.code == "server_budget_exceeded"
    assert "add your own key" in exc.value.message
    # With a key of their own the user goes on.
    keys.provider_key_save(user=alice, provider="openai", key="sk-own-00000000000000000")
    start(alice)


@pytest.mark.django_db
def test_the_budget_resets_at_the_month_boundary(
    keyed: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "5"
    last_minute = datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: last_minute)
    spend(keyed, "5.00", when=last_minute - timedelta(hours=1))
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed)
    assert "December 1, 2026" in exc.value.message
    first_minute = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: first_minute)
    turn = start(keyed)
    assert turn.started_at == first_minute


@pytest.mark.django_db
def test_concurrent_calls_overshoot_by_at_most_one_call_each(keyed: Any, settings: Any) -> None:
    """The documented bound: with N streams allowed at once, spend can end at most
    N calls' cost above the limit — each was admitted while spend was under it."""
    settings.DEFAULT_MONTHLY_BUDGET = "1"
    settings.CHAT_MAX_CONCURRENT_STREAMS = 3
    spend(keyed, "0.99")
    started = [start(keyed, message=f"q{i}") for i in range(3)]  # all admitted at $0.99
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, message="fourth")
    assert exc.value.code == "too_many_streams"
    per_call = Decimal("0")
    for turn in started:
        finish(turn)
        cost = UsageRecord.objects.filter(message=turn.assistant_message).get().cost
        assert cost is not None
        per_call = cost
    total = budgets.month_spend(keyed).total
    assert total > Decimal("1")
    assert total <= Decimal("1") + 3 * per_call
    with pytest.raises(turns.ChatRefused) as refused:
        start(keyed, message="after")
    assert refused.value.code == "budget_exceeded"


@pytest.mark.django_db
def test_budget_warning_at_80_percent(keyed: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "10"
    spend(keyed, "7.99")
    assert not budgets.budget_status(keyed).warning
    spend(keyed, "0.01")
    status = budgets.budget_status(keyed)
    assert status.warning
    assert status.used_fraction == Decimal("0.8")


@pytest.mark.django_db
def test_requests_per_minute(keyed: Any, settings: Any) -> None:
    settings.CHAT_RATE_LIMIT = "3/m"
    for i in range(3):
        finish(start(keyed, message=f"m{i}"))
    with pytest.raises(turns.ChatRefused) as exc:
        start(keyed, message="one too many")
    assert exc.value.status == 429
    assert exc.value.code == "rate_limited"
    retry_after = exc.value.extra["retry_after"]
    assert isinstance(retry_after, int)
    assert 1 <= retry_after <= 60


@pytest.mark.django_db
def test_a_refused_turn_gives_its_stream_slot_back(keyed: Any, bob: Any, settings: Any) -> None:
    settings.CHAT_MAX_CONCURRENT_STREAMS = 1
    conversation = Conversation.objects.create(user=bob, provider="demo", model="demo-echo")
    with pytest.raises(Http404):  # bob's conversation
        start(keyed, conversation_id=conversation.pk)
    finish(start(keyed))  # the slot is free


@pytest.mark.django_db(transaction=True)
def test_the_api_says_429_with_retry_after_and_402(client: Any, keyed: Any, settings: Any) -> None:
    import json

    client.force_login(keyed)
    settings.CHAT_RATE_LIMIT = "1/m"
    body = json.dumps(
        {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": "x"}
    )
    settings.DEFAULT_MONTHLY_BUDGET = "0"
    refused = client.post("/api/chat", body, content_type="application/json")
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"
    limited = client.post("/api/chat", body, content_type="application/json")
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1


@pytest.mark.django_db
def test_pages_show_the_budget_and_warn_at_80_percent(
    client: Any, keyed: Any, settings: Any
) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "10"
    client.force_login(keyed)
    usage = client.get("/usage/").content.decode()
    assert "$0.00 of $10.00 this month (0%)" in usage
    assert "budget-warning" not in client.get("/").content.decode()
    spend(keyed, "8.50")
    assert "over 80%" in client.get("/").content.decode()
    assert "$8.50 of $10.00 this month (85%)" in client.get("/usage/").content.decode()
    api = client.get("/api/usage").json()["budget"]
    assert api["limit"] == "10.000000"
    assert api["spent_this_month"] == "8.500000"
    assert api["warning"] is True
    spend(keyed, "2")
    assert "Paid models are paused" in client.get("/").content.decode()


@pytest.mark.django_db
def test_no_limit_is_said_plainly(client: Any, alice: Any) -> None:
    client.force_login(alice)
    assert "No monthly limit." in client.get("/usage/").content.decode()


@pytest.mark.django_db
def test_without_any_limit_the_pages_do_not_sum_the_month(
    client: Any, alice: Any, settings: Any
) -> None:
    # A heavy user's month is tens of thousands of ledger rows; with no limit
    # there is nothing to show for it on the chat and usage pages.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    spend(alice, "3", key_source="server")
    client.force_login(alice)
    for url in ["/", "/usage/"]:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        month_sums = [
            q["sql"]
            for q in queries
            if 'SUM("conversations_usagerecord"."cost") FILTER' in q["sql"]
        ]
        assert month_sums == [], url
    settings.SERVER_KEY_MONTHLY_BUDGET = "5"  # a limit applies: now it is summed and shown
    assert "Server keys: $3.00 of $5.00 this month." in client.get("/usage/").content.decode()
