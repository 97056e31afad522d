"""The conversations, models and usage endpoints."""

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Message, UsageRecord
from providers import keys


def make_conversation(
    user: Any, title: str = "Tokens", cost: str | None = "0.001000"
) -> Conversation:
    conversation = Conversation.objects.create(
        user=user, title=title, provider="openai", model="gpt-4o"
    )
    Message.objects.create(conversation=conversation, role="user", content="What is a token?")
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="A *piece* of a word.",
        html="<p>A <em>piece</em> of a word.</p>",
        provider="openai",
        model="gpt-4o",
        key_source="user",
        input_tokens=10,
        cached_tokens=2,
        output_tokens=6,
        reasoning_tokens=1,
        cost=Decimal(cost) if cost else None,
    )
    UsageRecord.objects.create(
        user=user,
        user_email=user.email,
        conversation=conversation,
        message=reply,
        provider="openai",
        model="gpt-4o",
        key_source="user",
        input_tokens=10,
        output_tokens=6,
        cost=Decimal(cost) if cost else None,
        unpriced=cost is None,
        outcome="complete",
    )
    return conversation


@pytest.mark.django_db
def test_list_and_detail(client: Client, alice: Any) -> None:
    conversation = make_conversation(alice)
    client.force_login(alice)
    listing = client.get("/api/conversations").json()
    assert listing == [
        {
            "id": conversation.pk,
            "title": "Tokens",
            "provider": "openai",
            "model": "gpt-4o",
            "updated_at": conversation.updated.isoformat(),
            "pinned": False,
            "archived": False,
            "total_cost": "0.001000",
            "unpriced_calls": 0,
        }
    ]
    detail = client.get(f"/api/conversations/{conversation.pk}").json()
    assert detail["system_prompt"] == ""
    assert detail["total_cost"] == "0.001000"
    user_msg, reply = detail["messages"]
    assert user_msg["role"] == "user"
    assert reply["html"] == "<p>A <em>piece</em> of a word.</p>"
    assert reply["cost"] == "0.001000"
    assert isinstance(reply["cost"], str)  # money is never a float
    assert {
        "id",
        "role",
        "content",
        "html",
        "status",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost",
        "created_at",
    } <= set(reply)


@pytest.mark.django_db
def test_search(client: Client, alice: Any) -> None:
    make_conversation(alice, title="Tokens")
    make_conversation(alice, title="Gardening")
    client.force_login(alice)
    assert [c["title"] for c in client.get("/api/conversations?q=garden").json()] == ["Gardening"]
    # Message content is searched too.
    assert len(client.get("/api/conversations?q=piece").json()) == 2


@pytest.mark.django_db
def test_rename_and_delete_and_the_ledger_stays(client: Client, alice: Any) -> None:
    conversation = make_conversation(alice)
    client.force_login(alice)
    renamed = client.patch(
        f"/api/conversations/{conversation.pk}",
        json.dumps({"title": "  About tokens  ", "user": 99}),
        content_type="application/json",
    )
    assert renamed.json()["title"] == "About tokens"
    empty = client.patch(
        f"/api/conversations/{conversation.pk}",
        json.dumps({"title": ""}),
        content_type="application/json",
    )
    assert empty.status_code == 400
    assert client.delete(f"/api/conversations/{conversation.pk}").json() == {"deleted": True}
    assert not Conversation.objects.exists()
    record = UsageRecord.objects.get()
    assert record.conversation is None
    assert record.cost == Decimal("0.001000")


@pytest.mark.django_db
def test_everything_is_scoped_to_the_owner(client: Client, alice: Any, bob: Any) -> None:
    theirs = make_conversation(bob)
    client.force_login(alice)
    assert client.get("/api/conversations").json() == []
    for method in ("get", "delete"):
        assert getattr(client, method)(f"/api/conversations/{theirs.pk}").status_code == 404
    patch = client.patch(
        f"/api/conversations/{theirs.pk}",
        json.dumps({"title": "x"}),
        content_type="application/json",
    )
    assert patch.status_code == 404
    assert client.get(f"/api/conversations/{theirs.pk}/export").status_code == 404
    assert client.get(f"/c/{theirs.pk}/").status_code == 404
    assert Conversation.objects.get(pk=theirs.pk).title == "Tokens"


@pytest.mark.django_db
def test_export_markdown_and_json(client: Client, alice: Any) -> None:
    conversation = make_conversation(alice)
    client.force_login(alice)
    md = client.get(f"/api/conversations/{conversation.pk}/export?format=md")
    assert md["Content-Type"].startswith("text/markdown")
    assert "attachment" in md["Content-Disposition"]
    text = md.content.decode()
    assert "# Tokens" in text
    assert "## You" in text
    assert "A *piece* of a word." in text
    assert "$0.001)" in text
    js = client.get(f"/api/conversations/{conversation.pk}/export?format=json").json()
    assert js["messages"][1]["content"] == "A *piece* of a word."
    assert client.get(f"/api/conversations/{conversation.pk}/export?format=pdf").status_code == 400


@pytest.mark.django_db
def test_unpriced_calls_are_counted_not_costed_zero(client: Client, alice: Any) -> None:
    conversation = make_conversation(alice, cost=None)
    client.force_login(alice)
    detail = client.get(f"/api/conversations/{conversation.pk}").json()
    assert detail["unpriced_calls"] == 1
    assert detail["messages"][1]["cost"] is None
    assert detail["messages"][1]["unpriced"] is True


@pytest.mark.django_db
def test_models_list_prices_and_availability(
    client: Client, alice: Any, prices: None, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    client.force_login(alice)
    models = {(m["provider"], m["model"]): m for m in client.get("/api/models").json()}
    demo = models[("demo", "demo-echo")]
    assert demo["available"] is True
    assert demo["input_per_mtok"] == "0.000000"
    gpt = models[("openai", "gpt-4o")]
    assert gpt["available"] is False
    assert gpt["input_per_mtok"] == "2.500000"
    assert gpt["cached_input_per_mtok"] == "1.250000"
    assert gpt["output_per_mtok"] == "10.000000"
    assert set(gpt) >= {
        "provider",
        "model",
        "name",
        "input_per_mtok",
        "cached_input_per_mtok",
        "output_per_mtok",
        "context_window",
        "available",
    }
    keys.provider_key_save(user=alice, provider="openai", key="sk-test-0000000000000000")
    models = {(m["provider"], m["model"]): m for m in client.get("/api/models").json()}
    assert models[("openai", "gpt-4o")]["available"] is True
    settings.ANTHROPIC_API_KEY = "sk-ant-server-0000000000000"
    models = {(m["provider"], m["model"]): m for m in client.get("/api/models").json()}
    assert models[("anthropic", "claude-opus-4-5")]["available"] is True


@pytest.mark.django_db
def test_usage_totals_by_model_and_by_day(client: Client, alice: Any, bob: Any) -> None:
    now = timezone.now()
    for user, cost, when in [
        (alice, "0.5", now),
        (alice, "0.25", now - timedelta(days=40)),
        (bob, "9", now),
    ]:
        UsageRecord.objects.create(
            user=user,
            user_email=user.email,
            provider="openai",
            model="gpt-4o",
            key_source="user",
            input_tokens=100,
            output_tokens=10,
            cost=Decimal(cost),
            outcome="complete",
            created=when,
        )
    client.force_login(alice)
    usage = client.get("/api/usage").json()  # default: this month
    assert usage["totals"]["cost"] == "0.500000"
    assert usage["totals"]["requests"] == 1
    assert usage["by_model"][0]["model"] == "gpt-4o"
    assert usage["by_day"][0]["day"] == now.date().isoformat()
    since = (now - timedelta(days=60)).date().isoformat()
    assert client.get(f"/api/usage?since={since}").json()["totals"]["cost"] == "0.750000"
    assert client.get("/api/usage?since=yesterday").status_code == 400
    assert (
        client.get(
            f"/api/usage?since={now.date()}&until={(now - timedelta(days=2)).date()}"
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_api_errors_are_json(client: Client) -> None:
    for url in ["/api/conversations", "/api/models", "/api/usage"]:
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.django_db
def test_the_usage_summary_folds_one_grouped_query(
    alice: Any, django_assert_num_queries: Any
) -> None:
    from conversations.selectors import usage_summary

    day1 = timezone.now().replace(day=1, hour=10, minute=0, second=0, microsecond=0)
    day2 = day1 + timedelta(days=1)
    rows = [
        ("openai", "gpt-4o", day1, "0.10", False, False),
        ("openai", "gpt-4o", day2, "0.20", False, True),
        ("anthropic", "claude-x", day1, "0.50", False, False),
        ("openai", "mystery", day2, None, True, False),
    ]
    for provider, model, when, cost, unpriced, estimated in rows:
        UsageRecord.objects.create(
            user=alice,
            user_email=alice.email,
            provider=provider,
            model=model,
            key_source="user",
            input_tokens=100,
            output_tokens=10,
            cost=None if cost is None else Decimal(cost),
            unpriced=unpriced,
            estimated=estimated,
            outcome="complete",
            created=when,
        )
    with django_assert_num_queries(1):
        summary = usage_summary(alice, day1.replace(hour=0), None)
    totals = summary["totals"]
    assert (totals["requests"], totals["cost"]) == (4, Decimal("0.80"))
    assert (totals["unpriced_calls"], totals["estimated_calls"]) == (1, 1)
    assert totals["input_tokens"] == 400
    assert [(r["model"], r["requests"], r["cost"]) for r in summary["by_model"]] == [
        ("claude-x", 1, Decimal("0.50")),
        ("gpt-4o", 2, Decimal("0.30")),
        ("mystery", 1, Decimal(0)),
    ]
    assert [(r["day"], r["requests"], r["cost"]) for r in summary["by_day"]] == [
        (day1.date(), 2, Decimal("0.60")),
        (day2.date(), 2, Decimal("0.20")),
    ]


@pytest.mark.django_db
def test_pinning_and_archiving_a_conversation(client: Client, alice: Any, bob: Any) -> None:
    from conversations.models import Conversation

    kept = Conversation.objects.create(user=alice, title="kept", provider="demo", model="demo-echo")
    shelved = Conversation.objects.create(
        user=alice, title="shelved words", provider="demo", model="demo-echo"
    )
    client.force_login(alice)

    def patch(pk: int, body: Any) -> Any:
        return client.patch(
            f"/api/conversations/{pk}", json.dumps(body), content_type="application/json"
        )

    assert patch(kept.pk, {"pinned": True}).json()["pinned"] is True
    assert patch(shelved.pk, {"archived": True}).json()["archived"] is True
    listed = client.get("/api/conversations").json()
    assert [c["title"] for c in listed] == ["kept"]
    assert [c["title"] for c in client.get("/api/conversations?archived=1").json()] == [
        "shelved words"
    ]
    # A search looks in the archive too.
    assert [c["title"] for c in client.get("/api/conversations?q=shelved").json()] == [
        "shelved words"
    ]
    bad = patch(kept.pk, {"pinned": "yes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "pinned"
    assert patch(kept.pk, {}).status_code == 400
    # Someone else's conversation is not found.
    client.force_login(bob)
    assert patch(kept.pk, {"archived": True}).status_code == 404
    assert Conversation.objects.get(pk=kept.pk).archived is False
