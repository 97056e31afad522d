"""The keys page in Chromium: save, test, replace, delete; the key is never shown."""

from typing import Any

import pytest
from django.conf import settings

from conftest import PASSWORD
from llmchat.tests.browser import page, screenshot
from providers.models import ProviderKey

__all__ = ["page"]

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_person_manages_keys(page: Any, mock_provider: Any) -> None:
    from conftest import make_user

    make_user("kim@example.com")
    page.goto("/accounts/login/")
    page.fill("input[name=login]", "kim@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")

    page.click("nav >> text=Keys")
    card = page.locator("#key-compatible")
    card.locator("input[name=base_url]").fill(settings.ALLOWED_PRIVATE_BASE_URLS[0] + "/v1")
    card.locator("input[name=key]").fill(KEY)
    # Tested before it is saved: the answer comes in the card, the field keeps the key.
    card.get_by_role("button", name="Test").click()
    card.get_by_text("The key works. Save it to use it.").wait_for()
    assert card.locator("input[name=key]").input_value() == KEY
    assert not ProviderKey.objects.exists()
    card.get_by_role("button", name="Save").click()
    page.get_by_text("Saved your OpenAI-compatible key sk-proj-…abcd").wait_for()

    card = page.locator("#key-compatible")
    card.get_by_role("button", name="Test").click()
    card.get_by_text("Your saved key works.").wait_for()
    screenshot(page, "keys")

    # The plaintext key is nowhere in the page, not even in an input's value.
    assert KEY not in page.content()
    values = page.eval_on_selector_all("input", "els => els.map(e => e.value)")
    assert KEY not in values

    # Deleting asks first.
    card = page.locator("#key-compatible")
    card.get_by_role("link", name="Delete…").click()
    page.get_by_text("Delete your OpenAI-compatible key?").wait_for()
    assert ProviderKey.objects.exists()
    page.get_by_role("button", name="Delete the key").click()
    page.get_by_text("Key deleted.").wait_for()
    assert not ProviderKey.objects.exists()
    assert page.csp_violations == []
    assert page.external_requests == []
