from typing import Any

import pytest
from django.test import Client

from providers import keys

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


@pytest.mark.django_db
def test_staff_see_keys_masked_never_in_plaintext(client: Client, staff: Any, alice: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    client.force_login(staff)
    listing = client.get("/admin/providers/providerkey/")
    assert listing.status_code == 200
    assert "sk-proj-…abcd" in listing.content.decode()
    assert KEY not in listing.content.decode()

    page = client.get(f"/admin/providers/providerkey/{record.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "sk-proj-…abcd" in html
    assert KEY not in html
    assert 'name="key"' not in html
    assert "gAAAAA" not in html  # nor the ciphertext


@pytest.mark.django_db
def test_staff_cannot_add_or_edit_keys(client: Client, staff: Any, alice: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    client.force_login(staff)
    assert client.get("/admin/providers/providerkey/add/").status_code == 403
    client.post(
        f"/admin/providers/providerkey/{record.pk}/change/",
        {"provider": "anthropic", "key": "sk-new"},
    )
    record.refresh_from_db()
    assert record.provider == "openai"
    assert record.key == KEY
