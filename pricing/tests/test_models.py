from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from pricing.calculator import calculate_cost
from pricing.models import ModelPrice, price_for
from providers.base import Usage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add(model: str = "m", at: datetime = T0, **prices: Any) -> ModelPrice:
    values = {"input_per_mtok": Decimal("1"), "output_per_mtok": Decimal("2"), **prices}
    return ModelPrice.objects.create(provider="openai", model=model, effective_from=at, **values)


@pytest.fixture(autouse=True)
def _no_prices(db: None) -> None:
    ModelPrice.objects.all().delete()


def test_the_price_in_effect_at_the_time_of_the_call() -> None:
    add(at=T0, input_per_mtok=Decimal("1"))
    add(at=T0 + timedelta(days=30), input_per_mtok=Decimal("3"))
    assert price_for("openai", "m", T0 - timedelta(seconds=1)) is None
    assert price_for("openai", "m", T0 + timedelta(days=1)).input_per_mtok == 1  # type: ignore[union-attr]
    assert price_for("openai", "m", T0 + timedelta(days=31)).input_per_mtok == 3  # type: ignore[union-attr]


def test_a_price_change_never_alters_a_cost_already_recorded() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    add(at=T0, input_per_mtok=Decimal("1"))
    call_time = T0 + timedelta(days=1)
    recorded = calculate_cost(usage, price_for("openai", "m", call_time).as_price())  # type: ignore[union-attr]
    add(at=T0 + timedelta(days=2), input_per_mtok=Decimal("5"))
    again = calculate_cost(usage, price_for("openai", "m", call_time).as_price())  # type: ignore[union-attr]
    assert recorded == again == Decimal("1")


def test_a_dated_snapshot_is_priced_like_its_alias() -> None:
    add(model="gpt-4o")
    add(model="claude-sonnet-4-5")
    assert price_for("openai", "gpt-4o-2024-08-06") is not None
    assert price_for("openai", "claude-sonnet-4-5-20250929") is not None
    assert price_for("openai", "gpt-4o-mini") is None  # not a date: no guessing


def test_an_unknown_model_is_unpriced_not_free() -> None:
    assert price_for("openai", "mystery-model") is None


def test_in_effect_and_latest_rows() -> None:
    now = timezone.now()
    add(model="a", at=now - timedelta(days=2))
    current = add(model="a", at=now - timedelta(days=1))
    future = add(model="a", at=now + timedelta(days=5))
    assert list(ModelPrice.objects.in_effect()) == [current]
    assert list(ModelPrice.objects.latest_rows()) == [future]


def test_tier_prices_need_a_threshold_and_input_and_output() -> None:
    with pytest.raises(ValidationError):
        ModelPrice(
            provider="openai",
            model="x",
            input_per_mtok=1,
            output_per_mtok=1,
            tier_input_per_mtok=2,
        ).full_clean()
    with pytest.raises(ValidationError):
        ModelPrice(
            provider="openai",
            model="x",
            input_per_mtok=1,
            output_per_mtok=1,
            tier_threshold_tokens=1000,
            tier_input_per_mtok=2,
        ).full_clean()


def test_prices_cannot_be_negative() -> None:
    with pytest.raises(ValidationError):
        ModelPrice(provider="openai", model="x", input_per_mtok=-1, output_per_mtok=1).full_clean()


def test_as_price_carries_the_tier() -> None:
    row = add(
        tier_threshold_tokens=200_000,
        tier_input_per_mtok=Decimal("2"),
        tier_output_per_mtok=Decimal("4"),
    )
    cost = calculate_cost(Usage(input_tokens=300_000, output_tokens=0), row.as_price())
    assert cost == Decimal("0.6")
