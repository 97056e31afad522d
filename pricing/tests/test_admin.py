from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from pricing.models import ModelPrice


def form_data(price: ModelPrice, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in ModelPrice._meta.fields:
        if field.name in ("id", "created"):
            continue
        value = getattr(price, field.name)
        if field.name == "effective_from":
            data["effective_from_0"] = value.strftime("%Y-%m-%d")
            data["effective_from_1"] = value.strftime("%H:%M:%S")
            continue
        if isinstance(value, bool):
            if value:
                data[field.name] = "on"
            continue
        data[field.name] = "" if value is None else value
    data.update(changes)
    return data


@pytest.mark.django_db
def test_the_list_shows_the_newest_price_per_model_with_search_and_filters(
    client: Client, staff: Any
) -> None:
    client.force_login(staff)
    page = client.get("/admin/pricing/modelprice/?provider__exact=anthropic&q=sonnet")
    assert page.status_code == 200
    html = page.content.decode()
    assert "claude-sonnet-4-5" in html
    assert "gpt-4o" not in html
    assert client.get("/admin/pricing/modelprice/?active__exact=1").status_code == 200
    assert client.get("/admin/pricing/modelprice/?rows=all").status_code == 200


@pytest.mark.django_db
def test_editing_a_price_creates_a_new_row_and_keeps_the_old_one(
    client: Client, staff: Any
) -> None:
    client.force_login(staff)
    old = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    response = client.post(
        f"/admin/pricing/modelprice/{old.pk}/change/",
        form_data(old, input_per_mtok="2.000000"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rows = ModelPrice.objects.filter(provider="openai", model="gpt-4o").order_by("effective_from")
    assert [r.input_per_mtok for r in rows] == [Decimal("2.5"), Decimal("2")]
    old.refresh_from_db()
    assert old.input_per_mtok == Decimal("2.5")

    history = client.get(f"/admin/pricing/modelprice/{rows[1].pk}/change/").content.decode()
    assert "$2.50" in history
    assert "current" in history


@pytest.mark.django_db
def test_editing_other_fields_changes_the_row_in_place(client: Client, staff: Any) -> None:
    client.force_login(staff)
    price = ModelPrice.objects.get(provider="openai", model="gpt-4o")
    data = form_data(price)
    data.pop("active")
    client.post(f"/admin/pricing/modelprice/{price.pk}/change/", data)
    assert ModelPrice.objects.filter(provider="openai", model="gpt-4o").count() == 1
    price.refresh_from_db()
    assert price.active is False


@pytest.mark.django_db
def test_an_operator_adds_a_providers_fallback_price(client: Client, staff: Any) -> None:
    from pricing.models import price_for

    client.force_login(staff)
    template = ModelPrice(
        provider="anthropic",
        model="*",
        input_per_mtok=Decimal(3),
        output_per_mtok=Decimal(15),
        source="our own rule for new models",
    )
    response = client.post("/admin/pricing/modelprice/add/", form_data(template))
    assert response.status_code == 302, response.content.decode()[:2000]
    price = price_for("anthropic", "claude-next-preview")
    assert price is not None
    assert (price.model, price.is_fallback, price.output_per_mtok) == ("*", True, Decimal(15))
    listing = client.get("/admin/pricing/modelprice/?provider__exact=anthropic").content.decode()
    assert "* (fallback: models without a price)" in listing
    from pricing.admin import ModelPriceAdmin

    assert ModelPriceAdmin.model_id.short_description == "model"  # type: ignore[attr-defined]
    assert ModelPriceAdmin.tier.short_description == "tier"  # type: ignore[attr-defined]
