"""The shipped price table: valid, complete, loaded by migrate, idempotent."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from pricing import sources
from pricing.models import ModelPrice


def test_every_row_parses_and_names_its_source_and_date() -> None:
    rows = sources.parse_json(sources.FIXTURE.read_text())
    raw = json.loads(sources.FIXTURE.read_text())
    assert len(rows) == len(raw)
    for row, item in zip(rows, raw, strict=True):
        assert set(item) == set(sources.ROW_FIELDS), row.model
        assert row.source, row.model
        assert row.effective_from is not None, row.model
        assert row.name, row.model
        assert row.input_per_mtok >= 0
        if row.cached_input_per_mtok is not None:
            assert row.cached_input_per_mtok <= row.input_per_mtok, row.model


def test_it_covers_the_three_vendors_and_the_demo_at_zero() -> None:
    rows = sources.parse_json(sources.FIXTURE.read_text())
    providers = {r.provider for r in rows}
    assert {"openai", "anthropic", "google", "demo"} <= providers
    (demo,) = [r for r in rows if r.provider == "demo"]
    assert demo.model == "demo-echo"
    assert demo.input_per_mtok == demo.output_per_mtok == Decimal(0)


@pytest.mark.django_db
def test_migrate_loaded_it() -> None:
    rows = sources.parse_json(sources.FIXTURE.read_text())
    assert ModelPrice.objects.count() == len(rows)
    assert ModelPrice.objects.filter(provider="demo", model="demo-echo").exists()


@pytest.mark.django_db
def test_loading_again_duplicates_nothing() -> None:
    before = ModelPrice.objects.count()
    assert sources.load_fixture(ModelPrice) == 0
    assert ModelPrice.objects.count() == before


@pytest.mark.django_db
def test_loading_again_never_overrides_an_operators_newer_price() -> None:
    row = ModelPrice.objects.filter(provider="anthropic").order_by("model").first()
    assert row is not None
    edited = ModelPrice.objects.create(
        provider=row.provider,
        model=row.model,
        input_per_mtok=Decimal("0.5"),
        output_per_mtok=Decimal("1"),
        effective_from=timezone.now(),
    )
    # Even with the shipped rows gone, the operator's newer row blocks the reload.
    ModelPrice.objects.filter(pk=row.pk).delete()
    sources.load_fixture(ModelPrice)
    assert list(ModelPrice.objects.filter(model=row.model)) == [edited]


@pytest.mark.django_db
def test_a_database_missing_rows_gets_them() -> None:
    ModelPrice.objects.filter(provider="google").delete()
    created = sources.load_fixture(ModelPrice)
    assert created == len(
        [r for r in sources.parse_json(sources.FIXTURE.read_text()) if r.provider == "google"]
    )
    assert ModelPrice.objects.filter(
        provider="google", effective_from__lt=datetime(2100, 1, 1, tzinfo=UTC)
    ).exists()
