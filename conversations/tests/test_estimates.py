"""POST /api/chat/estimate: the next turn's input, estimated, never recorded."""

import json
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from conversations.models import Conversation, Message, UsageRecord
from providers import keys


def estimate(client: Client, **body: Any) -> Any:
    payload = {"conversation": None, "provider": "openai", "model": "gpt-4o", "message": ""}
    payload.update(body)
    return client.post("/api/chat/estimate", json.dumps(payload), content_type="application/json")


@pytest.mark.django_db
def test_the_history_system_prompt_and_message_are_counted_and_priced(
    client: Client, alice: Any, prices: None
) -> None:
    conversation = Conversation.objects.create(
        user=alice, provider="openai", model="gpt-4o", system_prompt="s" * 400
    )
    Message.objects.create(conversation=conversation, role="user", content="u" * 800)
    Message.objects.create(
        conversation=conversation, role="assistant", content="a" * 800, status="complete"
    )
    client.force_login(alice)
    answer = estimate(client, conversation=conversation.pk, message="m" * 2000).json()
    # (400 + 800 + 800 + 2000) / 4 characters a token; gpt-4o input: $2.50 per million.
    assert answer == {
        "input_tokens": 1000,
        "method": "approximate",
        "input_cost": "0.002500",
        "budget_left": None,
    }
    # The system prompt being typed counts instead of the saved one.
    typed = estimate(client, conversation=conversation.pk, message="m" * 2000, system_prompt="")
    assert typed.json()["input_tokens"] == 900
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db
def test_what_is_left_of_the_budget_comes_with_it(client: Client, alice: Any, prices: None) -> None:
    alice.monthly_budget = Decimal("5")
    alice.save()
    client.force_login(alice)
    assert estimate(client, message="hi").json()["budget_left"] == "5.000000"


@pytest.mark.django_db
def test_bad_requests_are_refused(client: Client, alice: Any, bob: Any) -> None:
    theirs = Conversation.objects.create(user=bob, provider="openai", model="gpt-4o")
    client.force_login(alice)
    assert estimate(client, provider="nope").status_code == 400
    assert estimate(client, conversation=theirs.pk).status_code == 404
    assert estimate(client, system_prompt=3).status_code == 400


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("provider", "model", "key"),
    [
        ("openai", "gpt-4o", "sk-test-openai-key-000000000000abcd"),
        ("anthropic", "claude-sonnet-4-5", "sk-ant-test-anthropic-key-00000000abcd"),
        ("google", "gemini-2.5-flash", "AIzaSy-test-google-key-000000000abcd"),
    ],
)
def test_the_vendors_count_is_used_where_it_has_one(
    client: Client,
    alice: Any,
    prices: None,
    mock_provider: Any,
    provider: str,
    model: str,
    key: str,
) -> None:
    keys.provider_key_save(user=alice, provider=provider, key=key)
    mock_provider.configure(input_tokens=1234)
    client.force_login(alice)
    answer = estimate(client, provider=provider, model=model, message="Count me").json()
    assert answer["method"] == "counted"
    assert answer["input_tokens"] == 1234
    sent = mock_provider.requests[-1]
    assert "count" in sent.path.lower() or "input_tokens" in sent.path
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_count_that_fails_falls_back_to_the_approximation(
    client: Client, alice: Any, prices: None, mock_provider: Any
) -> None:
    keys.provider_key_save(
        user=alice, provider="anthropic", key="sk-ant-invalid-key-000000000000000"
    )
    client.force_login(alice)
    answer = estimate(client, provider="anthropic", model="claude-sonnet-4-5", message="x" * 400)
    assert answer.json()["method"] == "approximate"
    assert answer.json()["input_tokens"] == 100
