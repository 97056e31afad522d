from typing import Any

import pytest
from django.test import Client

from providers.models import ProviderKey

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


@pytest.mark.django_db
def test_the_keys_page_shows_keys_masked_only(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.post("/keys/openai/", {"key": KEY}, follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "sk-proj-…abcd" in html
    assert KEY not in html
    assert "Saved your OpenAI key" in html


@pytest.mark.django_db
def test_saving_the_form_again_keeps_the_key(client: Client, alice: Any) -> None:
    client.force_login(alice)
    client.post("/keys/openai/", {"key": KEY})
    # The form carries the masked value back; the key stays as it was.
    client.post("/keys/openai/", {"key": "sk-proj-…abcd"})
    assert ProviderKey.objects.get(user=alice).key == KEY


@pytest.mark.django_db
def test_errors_are_shown_on_the_form(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.post("/keys/compatible/", {"key": KEY, "base_url": "http://169.254.169.254/"})
    assert response.status_code == 400
    assert "private or reserved network" in response.content.decode()
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_deleting_a_key(client: Client, alice: Any) -> None:
    client.force_login(alice)
    client.post("/keys/openai/", {"key": KEY})
    client.post("/keys/openai/delete/")
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_unknown_provider_is_404(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.post("/keys/nope/", {"key": KEY}).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_testing_the_saved_key(client: Client, alice: Any, mock_provider: Any) -> None:
    client.force_login(alice)
    client.post("/keys/openai/", {"key": "sk-invalid-0000000000000000"})
    # The form's Test with the field as the page shows it (masked): the saved key.
    masked = ProviderKey.objects.get().masked
    bad = client.post("/keys/openai/", {"action": "test", "key": masked})
    assert "rejected the API key" in bad.content.decode()
    client.post("/keys/openai/", {"key": KEY})
    good = client.post("/keys/openai/", {"action": "test", "key": "sk-proj-…abcd"})
    assert "The key works." in good.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_typed_key_is_tested_before_it_is_saved(
    client: Client, alice: Any, mock_provider: Any
) -> None:
    client.force_login(alice)
    bad = client.post("/keys/openai/", {"action": "test", "key": "sk-invalid-0000000000000000"})
    assert bad.status_code == 200
    assert "rejected the API key" in bad.content.decode()
    good = client.post("/keys/openai/", {"action": "test", "key": KEY})
    html = good.content.decode()
    assert "The key works." in html
    assert KEY not in html  # not written back into the page
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("provider", "pasted"),
    [
        ("openai", "my-password-1234567890"),  # not a key
        ("openai", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),  # Anthropic's, in OpenAI's card
        ("anthropic", KEY),
        ("google", KEY),
    ],
)
def test_a_key_of_the_wrong_shape_is_refused_on_the_form(
    client: Client, alice: Any, provider: str, pasted: str
) -> None:
    client.force_login(alice)
    response = client.post(f"/keys/{provider}/", {"key": pasted})
    assert response.status_code == 400
    assert "does not look like" in response.content.decode()
    assert pasted not in response.content.decode()
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_deleting_a_key_asks_first(client: Client, alice: Any) -> None:
    client.force_login(alice)
    client.post("/keys/openai/", {"key": KEY})
    page = client.get("/keys/").content.decode()
    # The keys page links to a confirmation; it has no form that deletes at once.
    assert 'href="/keys/openai/delete/"' in page
    assert 'action="/keys/openai/delete/"' not in page
    confirm = client.get("/keys/openai/delete/")
    assert confirm.status_code == 200
    assert "Delete your OpenAI key?" in confirm.content.decode()
    assert "sk-proj-…abcd" in confirm.content.decode()
    assert ProviderKey.objects.exists()
    client.post("/keys/openai/delete/")
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_key_pages_need_post_and_sign_in(client: Client, alice: Any) -> None:
    assert client.post("/keys/openai/", {"key": KEY}).status_code == 302
    client.force_login(alice)
    assert client.get("/keys/openai/").status_code == 405
