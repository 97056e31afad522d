"""Google sign-in end to end: allauth's real views, Google's endpoints stubbed at
the HTTP layer (allauth talks to them with `requests`)."""

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.test import Client, override_settings

from accounts.models import User

TOKEN_URL = "https://oauth2.googleapis.com/token"
USERINFO_URL = "https://www.googleapis.com/oauth2/v2/userinfo"

GOOGLE = {
    "google": {
        **settings.SOCIALACCOUNT_PROVIDERS["google"],
        "APPS": [{"client_id": "test-client.apps", "secret": "test-client-secret", "key": ""}],
    }
}


@pytest.fixture
def google() -> Iterator[responses.RequestsMock]:
    with override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE), responses.RequestsMock() as rsps:
        yield rsps


def userinfo(email: str, *, verified: bool = True, sub: str = "108000000000000000001") -> dict:
    return {
        "id": sub,
        "email": email,
        "verified_email": verified,
        "name": "Gina Google",
        "given_name": "Gina",
        "family_name": "Google",
        "picture": "https://lh3.googleusercontent.com/a/photo",
    }


def google_login(client: Client, rsps: responses.RequestsMock, info: dict) -> Any:
    """Start the login, come back from Google with a code, return the callback response."""
    start = client.post("/accounts/google/login/", {"process": "login"})
    assert start.status_code == 302
    authorize = urlparse(start["Location"])
    assert authorize.netloc == "accounts.google.com"
    query = parse_qs(authorize.query)
    assert query["client_id"] == ["test-client.apps"]
    assert "code_challenge" in query  # PKCE

    rsps.post(
        TOKEN_URL,
        json={"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"},
    )
    rsps.get(USERINFO_URL, json=info)
    return client.get(
        "/accounts/google/login/callback/",
        {"state": query["state"][0], "code": "4/test-auth-code"},
    )


def signed_in_user(client: Client) -> Any:
    from django.contrib.auth import get_user

    return get_user(client)


@pytest.mark.django_db
def test_the_google_button_shows_only_when_configured(client: Client) -> None:
    assert b"Continue with Google" not in client.get("/accounts/login/").content
    with override_settings(SOCIALACCOUNT_PROVIDERS=GOOGLE):
        assert b"Continue with Google" in client.get("/accounts/login/").content


@pytest.mark.django_db
def test_a_get_does_not_start_the_login(client: Client, google: responses.RequestsMock) -> None:
    # SOCIALACCOUNT_LOGIN_ON_GET=False: a link alone can't log anyone in.
    response = client.get("/accounts/google/login/")
    assert response.status_code == 200
    assert b"<form" in response.content


@pytest.mark.django_db
def test_first_login_creates_the_user_and_second_finds_it(
    client: Client, google: responses.RequestsMock
) -> None:
    response = google_login(client, google, userinfo("gina@example.com"))
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(email="gina@example.com")
    assert signed_in_user(client) == user
    assert SocialAccount.objects.get(user=user).uid == "108000000000000000001"
    token_call = google.calls[0].request
    assert "code=4%2Ftest-auth-code" in str(token_call.body)
    assert "code_verifier=" in str(token_call.body)

    client.post("/accounts/logout/")
    assert not signed_in_user(client).is_authenticated

    response = google_login(client, google, userinfo("gina@example.com"))
    assert response.status_code == 302
    assert signed_in_user(client) == user
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_it_does_not_take_over_an_account_with_the_same_email(
    client: Client, alice: Any, google: responses.RequestsMock
) -> None:
    response = google_login(client, google, userinfo("alice@example.com"))
    # The person is asked to sign up with another address instead.
    assert response.status_code == 302
    assert response["Location"] == "/accounts/3rdparty/signup/"
    assert not signed_in_user(client).is_authenticated
    assert not SocialAccount.objects.exists()
    # Submitting the same address is refused with a way forward.
    page = client.post("/accounts/3rdparty/signup/", {"email": "alice@example.com"})
    assert page.status_code == 200
    assert b"An account already exists with this email address" in page.content
    assert not signed_in_user(client).is_authenticated
    assert User.objects.count() == 1


@pytest.mark.django_db
@override_settings(
    SOCIALACCOUNT_EMAIL_AUTHENTICATION=True, SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT=True
)
def test_email_authentication_signs_in_a_verified_owner(
    client: Client, alice: Any, google: responses.RequestsMock
) -> None:
    response = google_login(client, google, userinfo("alice@example.com", verified=True))
    assert response.status_code == 302
    assert signed_in_user(client) == alice


@pytest.mark.django_db
@override_settings(
    SOCIALACCOUNT_EMAIL_AUTHENTICATION=True, SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT=True
)
def test_email_authentication_never_trusts_an_unverified_email(
    client: Client, alice: Any, google: responses.RequestsMock
) -> None:
    google_login(client, google, userinfo("alice@example.com", verified=False))
    assert signed_in_user(client) != alice
    assert not SocialAccount.objects.filter(user=alice).exists()


@pytest.mark.django_db
def test_a_failed_token_exchange_is_an_error_page_not_a_500(
    client: Client, google: responses.RequestsMock
) -> None:
    start = client.post("/accounts/google/login/", {"process": "login"})
    state = parse_qs(urlparse(start["Location"]).query)["state"][0]
    google.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})
    response = client.get("/accounts/google/login/callback/", {"state": state, "code": "bad"})
    assert response.status_code == 401
    assert b"Third-Party Login Failure" in response.content
    assert b'class="site-header"' in response.content
    assert not signed_in_user(client).is_authenticated
