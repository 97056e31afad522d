"""A person in Chromium: sign up, sign out, sign in, change the password."""

from typing import Any

import pytest

from accounts.models import User
from llmchat.tests.browser import page, screenshot

__all__ = ["page"]

PASSWORD = "a long and private passphrase"
NEW_PASSWORD = "another long private passphrase"


def sign_in(page: Any, email: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_person_signs_up_signs_out_signs_in_and_changes_the_password(page: Any) -> None:
    page.goto("/")
    assert page.url.endswith("/accounts/login/?next=/")
    screenshot(page, "login")

    page.click("text=Sign up")
    page.fill("input[name=email]", "pat@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("nav").get_by_text("pat@example.com").is_visible()
    assert User.objects.filter(email="pat@example.com").exists()

    page.click("nav >> text=Sign out")
    page.wait_for_url("**/accounts/login/")
    page.goto("/")
    assert "/accounts/login/" in page.url

    sign_in(page, "pat@example.com", "not my password")
    assert page.get_by_text("not correct").is_visible()
    sign_in(page, "pat@example.com", PASSWORD)
    page.wait_for_url("**/")

    page.click("nav >> text=pat@example.com")
    page.click("text=Change password")
    page.fill("input[name=oldpassword]", PASSWORD)
    page.fill("input[name=password1]", NEW_PASSWORD)
    page.fill("input[name=password2]", NEW_PASSWORD)
    page.click("main button[type=submit]")
    page.get_by_text("Password successfully changed").wait_for()
    screenshot(page, "password-changed")

    page.click("nav >> text=Sign out")
    page.wait_for_url("**/accounts/login/")
    sign_in(page, "pat@example.com", NEW_PASSWORD)
    page.wait_for_url("**/")
    assert page.locator("nav").get_by_text("pat@example.com").is_visible()

    assert page.csp_violations == []
    assert page.external_requests == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_layout_works_on_a_phone(page: Any) -> None:
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto("/accounts/login/")
    # The menu folds behind a toggle; the form fits the screen.
    assert not page.locator(".nav-links").is_visible()
    page.click(".nav-toggle-label")
    assert page.locator(".nav-links").is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    screenshot(page, "login-phone")
