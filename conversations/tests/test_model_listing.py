"""GET /api/models/<provider>/listed: the models a provider lists for the user's
key, priced or not, and whether the user may use them."""

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from pricing.models import ModelPrice
from providers import keys

pytestmark = pytest.mark.django_db

LISTED = "/api/models/openai/listed"


@pytest.fixture
def signed_in(client: Client, alice: Any, mock_provider: Any) -> Client:
    client.force_login(alice)
    return client


def listed(client: Client, path: str = LISTED) -> dict[str, dict[str, Any]]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return {m["model"]: m for m in response.json()}


def test_a_users_own_key_without_a_budget_may_use_what_is_unpriced(
    signed_in: Client, alice: Any
) -> None:
    keys.provider_key_save(user=alice, provider="openai", key="sk-own-00000000000000000")
    models = listed(signed_in)
    assert set(models) == {"gpt-mock", "gpt-mock-mini"}
    assert models["gpt-mock"] == {
        "provider": "openai",
        "model": "gpt-mock",
        "pricing": "none",
        "input_per_mtok": None,
        "output_per_mtok": None,
        "usable": True,
        "reason": "",
    }


def test_on_the_servers_key_an_unpriced_model_is_shown_as_unusable_and_why(
    signed_in: Client, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-0000000000000000"
    ModelPrice.objects.create(
        provider="openai", model="gpt-mock", input_per_mtok=Decimal(1), output_per_mtok=Decimal(4)
    )
    models = listed(signed_in)
    assert models["gpt-mock"]["pricing"] == "own"
    assert models["gpt-mock"]["usable"] is True
    assert models["gpt-mock"]["input_per_mtok"] == "1.000000"
    mini = models["gpt-mock-mini"]
    assert (mini["pricing"], mini["usable"]) == ("none", False)
    assert "server's key must be priced" in mini["reason"]


def test_a_fallback_price_makes_the_unpriced_usable_at_that_price(
    signed_in: Client, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-0000000000000000"
    settings.FALLBACK_PRICES = {"openai": (Decimal(10), Decimal(40))}
    mini = listed(signed_in)["gpt-mock-mini"]
    assert (mini["pricing"], mini["usable"]) == ("fallback", True)
    assert (mini["input_per_mtok"], mini["output_per_mtok"]) == ("10.000000", "40.000000")


def test_the_listing_is_kept_for_the_key_and_asked_again_for_a_new_one(
    signed_in: Client, alice: Any, mock_provider: Any
) -> None:
    keys.provider_key_save(user=alice, provider="openai", key="sk-own-00000000000000000")
    listed(signed_in)
    listed(signed_in)
    assert len(mock_provider.requests) == 1
    keys.provider_key_save(user=alice, provider="openai", key="sk-new-00000000000000000")
    listed(signed_in)
    assert len(mock_provider.requests) == 2


@pytest.mark.parametrize(
    ("key", "path", "status", "code"),
    [
        ("sk-invalid-0000000000000000", LISTED, 502, "invalid_key"),
        (None, LISTED, 400, "no_key"),
        (None, "/api/models/mistral/listed", 404, "unknown_provider"),
    ],
)
def test_what_cannot_be_listed_is_a_json_error(
    signed_in: Client, alice: Any, key: str | None, path: str, status: int, code: str
) -> None:
    if key:
        keys.provider_key_save(user=alice, provider="openai", key=key)
    response = signed_in.get(path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "sk-invalid" not in response.content.decode()


def test_the_demo_lists_nothing(signed_in: Client) -> None:
    assert listed(signed_in, "/api/models/demo/listed") == {}


def test_the_picker_does_not_offer_the_fallback_row(signed_in: Client, prices: None) -> None:
    ModelPrice.objects.create(
        provider="openai", model="*", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)
    )
    models = {(m["provider"], m["model"]) for m in signed_in.get("/api/models").json()}
    assert ("openai", "gpt-4o") in models
    assert ("openai", "*") not in models
    assert "openai|*" not in signed_in.get("/").content.decode()
