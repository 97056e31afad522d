"""The keys JSON API: keys go in, only masked forms come out."""

import json
from typing import Any

import pytest
from django.test import Client

from providers.models import ProviderKey

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


def put(client: Client, provider: str, body: Any, **extra: Any) -> Any:
    return client.put(
        f"/api/keys/{provider}", json.dumps(body), content_type="application/json", **extra
    )


@pytest.mark.django_db
def test_it_saves_lists_and_deletes_keys_without_ever_returning_them(
    client: Client, alice: Any
) -> None:
    client.force_login(alice)
    saved = put(client, "openai", {"key": KEY})
    assert saved.status_code == 200
    body = saved.json()
    assert body["provider"] == "openai"
    assert body["masked"] == "sk-proj-…abcd"
    assert body["last_used_at"] is None
    assert KEY not in saved.content.decode()

    listing = client.get("/api/keys")
    assert listing.status_code == 200
    assert [k["masked"] for k in listing.json()] == ["sk-proj-…abcd"]
    assert set(listing.json()[0]) == {
        "provider",
        "masked",
        "base_url",
        "created_at",
        "last_used_at",
    }
    assert KEY not in listing.content.decode()

    assert client.delete("/api/keys/openai").json() == {"deleted": True}
    assert client.get("/api/keys").json() == []
    missing = client.delete("/api/keys/openai")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_keys_are_scoped_to_their_owner(client: Client, alice: Any, bob: Any) -> None:
    client.force_login(alice)
    put(client, "openai", {"key": KEY})
    client.force_login(bob)
    assert client.get("/api/keys").json() == []
    assert client.delete("/api/keys/openai").status_code == 404
    assert ProviderKey.objects.filter(user=alice).exists()


@pytest.mark.django_db
def test_a_user_field_in_the_body_is_ignored(client: Client, alice: Any, bob: Any) -> None:
    client.force_login(alice)
    put(client, "openai", {"key": KEY, "user": bob.pk})
    assert ProviderKey.objects.get().user == alice


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ('{"key": 5}', 400, "invalid"),
        ("{}", 400, "required"),
        ('{"key": "has a space"}', 400, "invalid_key_format"),
        ('{"key": "' + "x" * 20000 + '"}', 413, "too_large"),
    ],
)
def test_bad_bodies_are_clear_4xx_errors(
    client: Client, alice: Any, body: str, status: int, code: str
) -> None:
    client.force_login(alice)
    response = client.put("/api/keys/openai", body, content_type="application/json")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.django_db
def test_unknown_provider_is_404(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = put(client, "nope", {"key": KEY})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_provider"


@pytest.mark.django_db
def test_anonymous_gets_401_json(client: Client) -> None:
    response = client.get("/api/keys")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.django_db
def test_wrong_method_is_405(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.post("/api/keys")
    assert response.status_code == 405
    assert response["Allow"] == "GET"


@pytest.mark.django_db
def test_csrf_is_enforced_with_a_json_error(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = put(client, "openai", {"key": KEY})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_testing_a_key(client: Client, alice: Any, mock_provider: Any) -> None:
    client.force_login(alice)
    candidate = client.post(
        "/api/keys/anthropic/test",
        json.dumps({"key": "sk-ant-invalid-000000000000"}),
        content_type="application/json",
    )
    assert candidate.json()["valid"] is False
    assert candidate.json()["code"] == "invalid_key"
    assert not ProviderKey.objects.exists()  # testing saves nothing

    good = client.post(
        "/api/keys/anthropic/test",
        json.dumps({"key": "sk-ant-good-000000000000"}),
        content_type="application/json",
    )
    assert good.json() == {"valid": True, "code": "", "message": "The key works."}
    assert not ProviderKey.objects.exists()

    none_saved = client.post("/api/keys/google/test", content_type="application/json")
    assert none_saved.json()["code"] == "no_key"
    put(client, "google", {"key": "AIzaSy-good-key-0000000000000"})
    saved = client.post("/api/keys/google/test", content_type="application/json")
    assert saved.json()["valid"] is True
