"""Unpriced models: a call that a budget or the server's allowance governs, and
every call on the server's keys, needs a price (the model's own, or its
provider's fallback); a user's own key with no budget may still use one."""

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from conversations import turns
from conversations.models import Message, UsageRecord
from conversations.tests.helpers import start
from llmchat.settings import _fallback_prices
from pricing.models import ModelPrice, price_for
from providers import keys
from providers.base import Usage

pytestmark = pytest.mark.django_db

UNPRICED = "o1-pro"


def finish(turn: turns.Turn, input_tokens: int = 10_000, output_tokens: int = 1000) -> Message:
    message = turns.chat_finish(
        turn=turn,
        text="ok",
        status="complete",
        usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        usage_final=True,
    )
    turns.release_turn(turn)
    return message


@pytest.fixture
def server_key(settings: Any) -> None:
    settings.OPENAI_API_KEY = "sk-server-0000000000000000"


@pytest.fixture
def own_key(alice: Any) -> Any:
    keys.provider_key_save(user=alice, provider="openai", key="sk-own-00000000000000000")
    return alice


def refused(user: Any, **kwargs: Any) -> turns.ChatRefused:
    with pytest.raises(turns.ChatRefused) as exc:
        start(user, model=UNPRICED, **kwargs)
    return exc.value


def test_an_unpriced_model_on_the_servers_key_is_refused_before_anything_is_saved(
    alice: Any, server_key: None
) -> None:
    # With no allowance set either: the operator's money is never spent unmetered.
    error = refused(alice)
    assert (error.status, error.code) == (400, "unpriced_model")
    assert error.extra == {"field": "model"}
    assert UNPRICED in error.message
    assert "server's key" in error.message
    assert not Message.objects.exists()


def test_an_unpriced_model_under_a_budget_is_refused_even_with_the_users_own_key(
    own_key: Any, settings: Any
) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "0.01"
    error = refused(own_key)
    assert error.code == "unpriced_model"
    assert "budget" in error.message


def test_a_users_own_key_with_no_budget_may_use_an_unpriced_model(own_key: Any) -> None:
    message = finish(start(own_key, model=UNPRICED))
    assert message.cost is None
    assert message.unpriced
    record = UsageRecord.objects.get()
    assert record.unpriced
    assert record.cost is None


def test_twelve_calls_on_a_cent_are_not_all_admitted_once_a_fallback_prices_them(
    alice: Any, server_key: None, settings: Any
) -> None:
    # The outside test's case: o1-pro on a $0.01 allowance, each call well over it.
    settings.SERVER_KEY_MONTHLY_BUDGET = "0.01"
    settings.FALLBACK_PRICES = {"openai": (Decimal(150), Decimal(600))}
    outcomes = []
    for _ in range(12):
        try:
            finish(start(alice, model=UNPRICED))
            outcomes.append("admitted")
        except turns.ChatRefused as exc:
            outcomes.append(exc.code)
    assert outcomes == ["admitted"] + ["server_budget_exceeded"] * 11
    record = UsageRecord.objects.get()
    assert record.cost == Decimal("2.100000")  # 10k in at $150, 1k out at $600 per 1M
    assert record.fallback_price
    assert not record.unpriced
    assert record.price is None  # the setting has no row to refer to


def test_the_admins_fallback_row_wins_over_the_setting_and_is_effective_dated(
    alice: Any, server_key: None, settings: Any
) -> None:
    settings.FALLBACK_PRICES = {"openai": (Decimal(150), Decimal(600))}
    row = ModelPrice.objects.create(
        provider="openai", model="*", input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)
    )
    message = finish(start(alice, model=UNPRICED))
    assert message.cost == Decimal("0.012000")
    assert message.fallback_price
    assert message.price == row
    record = UsageRecord.objects.get()
    assert (record.price, record.fallback_price, record.cost) == (row, True, Decimal("0.012"))


def test_a_models_own_price_and_its_alias_win_over_the_fallback(prices: None) -> None:
    ModelPrice.objects.create(
        provider="openai", model="*", input_per_mtok=Decimal(99), output_per_mtok=Decimal(99)
    )
    assert price_for("openai", "gpt-4o").model == "gpt-4o"  # type: ignore[union-attr]
    assert price_for("openai", "gpt-4o-2024-08-06").model == "gpt-4o"  # type: ignore[union-attr]
    assert price_for("openai", "gpt-mystery").model == "*"  # type: ignore[union-attr]
    assert price_for("anthropic", "claude-mystery") is None  # another provider's fallback


def test_a_fallback_covers_an_unpriced_model_under_a_budget(own_key: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "1"
    settings.FALLBACK_PRICES = {"openai": (Decimal(10), Decimal(40))}
    message = finish(start(own_key, model=UNPRICED))
    assert message.cost == Decimal("0.140000")


def test_the_free_demo_needs_no_price(alice: Any, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "1"
    start(alice, provider="demo", model="demo-anything")


def test_a_replayed_message_is_answered_even_if_its_model_lost_its_price(
    alice: Any, server_key: None, settings: Any
) -> None:
    settings.FALLBACK_PRICES = {"openai": (Decimal(1), Decimal(1))}
    first = finish(start(alice, model=UNPRICED, client_message_id="m-1"))
    settings.FALLBACK_PRICES = {}
    again = start(alice, model=UNPRICED, client_message_id="m-1")
    assert isinstance(again, turns.Replay)
    assert again.assistant_message.pk == first.pk


@pytest.mark.parametrize(
    "raw",
    [
        "openai",
        "openai=1",
        "openai=1/2/3",
        "openai=x/1",
        "openai=-1/1",
        "openai=nan/1",
        "openai=1/inf",
        "openai=1e7/1",
        "openai=0.0000001/1",
        "mistral=1/1",
        "=1/1",
    ],
)
def test_a_malformed_fallback_setting_stops_the_server_with_its_rule(raw: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="FALLBACK_PRICES"):
        _fallback_prices(raw)


def test_the_fallback_setting_reads_each_provider() -> None:
    assert _fallback_prices(" openai=10/40 , compatible=0/0,") == {
        "openai": (Decimal(10), Decimal(40)),
        "compatible": (Decimal(0), Decimal(0)),
    }


def test_model_ids_users_make_up_add_no_metric_series(own_key: Any, settings: Any) -> None:
    from prometheus_client import REGISTRY

    def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {
            (sample.name, tuple(sorted(sample.labels.items())))
            for metric in REGISTRY.collect()
            for sample in metric.samples
            if "model" in sample.labels
        }

    settings.CHAT_RATE_LIMIT = ""
    finish(start(own_key, model="made-up-first"))
    before = series()
    for n in range(20):
        finish(start(own_key, model=f"made-up-{uuid.uuid4().hex}-{n}"))
    assert series() == before
    # A priced model is counted under its price's id (a dated snapshot under its alias).
    finish(start(own_key, model="gpt-4o-2024-08-06"))
    labels = {"provider": "openai", "model": "gpt-4o", "outcome": "complete"}
    assert REGISTRY.get_sample_value("llmchat_chat_turns_total", labels)


def test_a_models_other_spelling_is_priced_as_the_model(alice: Any, settings: Any) -> None:
    # Gemini takes "models/gemini-2.5-pro" for "gemini-2.5-pro": not the fallback's.
    settings.GEMINI_API_KEY = "gm-server-0000000000000000"
    settings.FALLBACK_PRICES = {"google": (Decimal("0.1"), Decimal("0.4"))}
    turn = start(alice, provider="google", model="models/gemini-2.5-pro")
    assert turn.request.model == turn.assistant_message.model == "gemini-2.5-pro"
    assert turn.price is not None
    assert (turn.price.model, turn.price.is_fallback) == ("gemini-2.5-pro", False)
