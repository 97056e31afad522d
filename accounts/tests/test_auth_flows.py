"""Sign up, verify, sign in, sign out, change and reset the password (allauth)."""

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client, override_settings

from accounts.models import User
from conftest import PASSWORD, require_redis

NEW_PASSWORD = "a different long passphrase"


def link_in_last_mail(pattern: str) -> str:
    match = re.search(pattern, str(mail.outbox[-1].body))
    assert match, str(mail.outbox[-1].body)
    return match.group(0)


def sign_up(client: Client, email: str) -> Any:
    return client.post(
        "/accounts/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )


def sign_in(client: Client, email: str, password: str = PASSWORD) -> Any:
    return client.post("/accounts/login/", {"login": email, "password": password})


@pytest.mark.django_db
@override_settings(ACCOUNT_EMAIL_VERIFICATION="mandatory")
def test_it_signs_up_verifies_the_email_then_signs_in(client: Client) -> None:
    response = sign_up(client, "carol@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert User.objects.filter(email="carol@example.com").exists()

    # Not signed in before the address is verified.
    assert client.get("/").status_code == 302
    assert sign_in(client, "carol@example.com")["Location"] == "/accounts/confirm-email/"

    confirm_url = link_in_last_mail(r"/accounts/confirm-email/[^/\s]+/")
    assert client.post(confirm_url).status_code == 302

    response = sign_in(client, "carol@example.com")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


@pytest.mark.django_db
@override_settings(ACCOUNT_EMAIL_VERIFICATION="optional")
def test_optional_verification_signs_in_right_after_signing_up(client: Client) -> None:
    response = sign_up(client, "dave@example.com")
    assert response.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db
@override_settings(ACCOUNT_EMAIL_VERIFICATION="mandatory")
def test_signing_up_with_a_taken_email_reveals_nothing(client: Client, alice: Any) -> None:
    taken = sign_up(client, "alice@example.com")
    fresh = Client().post(
        "/accounts/signup/",
        {"email": "erin@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert taken.status_code == fresh.status_code == 302
    assert taken["Location"] == fresh["Location"]
    assert User.objects.filter(email="alice@example.com").count() == 1
    # The owner of the address is told someone tried.
    assert any(m.to == ["alice@example.com"] for m in mail.outbox)


@pytest.mark.django_db
def test_it_signs_in_with_email_and_password(client: Client, alice: Any) -> None:
    response = sign_in(client, "alice@example.com")
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert b"alice@example.com" in page.content


@pytest.mark.django_db
def test_a_wrong_password_is_a_form_error(client: Client, alice: Any) -> None:
    response = sign_in(client, "alice@example.com", "wrong password")
    assert response.status_code == 200
    assert b"not correct" in response.content
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_failed_sign_ins_are_rate_limited(client: Client, alice: Any) -> None:
    for _ in range(5):
        sign_in(client, "alice@example.com", "wrong password")
    response = sign_in(client, "alice@example.com")
    assert b"Too many failed login attempts" in response.content
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_sign_out_needs_a_post(client: Client, alice: Any) -> None:
    client.force_login(alice)
    page = client.get("/accounts/logout/")
    assert page.status_code == 200  # a confirmation page, still signed in
    assert client.get("/").status_code == 200

    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_it_changes_the_password(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    # Still signed in on this device.
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_changing_the_password_needs_the_old_one(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.post(
        "/accounts/password/change/",
        {"oldpassword": "not it", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


@pytest.mark.django_db
def test_it_resets_a_forgotten_password(client: Client, alice: Any) -> None:
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    reset_url = link_in_last_mail(r"/accounts/password/reset/key/[^\s]+/")

    form = client.get(reset_url, follow=True)
    assert form.status_code == 200
    action = form.redirect_chain[-1][0] if form.redirect_chain else reset_url
    response = client.post(action, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)


@pytest.mark.django_db
def test_password_reset_does_not_reveal_whether_an_account_exists(
    client: Client, alice: Any
) -> None:
    known = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]


@pytest.mark.django_db
def test_allauth_pages_use_the_site_layout(client: Client) -> None:
    for url in ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"]:
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert 'class="site-header"' in html, url
        assert "/static/css/site.css" in html, url


@pytest.mark.django_db
def test_pages_need_a_signed_in_user(client: Client) -> None:
    for url in ["/", "/usage/", "/keys/", "/accounts/profile/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url


@pytest.mark.django_db
def test_sessions_in_the_shared_cache_end_with_sign_out(alice: Any) -> None:
    # With REDIS_URL, sessions are read from Redis (cached_db): signing out must
    # end the session there too, for every process that reads it.
    import os

    require_redis()
    redis = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/13",
            "KEY_PREFIX": f"test-sessions-{os.getpid()}",
        }
    }
    with override_settings(
        CACHES=redis, SESSION_ENGINE="django.contrib.sessions.backends.cached_db"
    ):
        from django.core.cache import cache

        client = Client()
        client.force_login(alice)
        key = client.cookies["sessionid"].value
        assert cache.get(f"django.contrib.sessions.cached_db{key}") is not None
        assert client.get("/").status_code == 200
        client.post("/accounts/logout/")
        assert cache.get(f"django.contrib.sessions.cached_db{key}") is None
        stolen = Client()
        stolen.cookies["sessionid"] = key  # the old cookie, kept by someone
        assert stolen.get("/").status_code == 302  # to sign in
