from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from conftest import PASSWORD


@pytest.mark.django_db
def test_admin_sign_in_goes_through_allauth(client: Client) -> None:
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0].startswith("/accounts/login/?next=")


@pytest.mark.django_db
def test_the_admin_login_form_cannot_be_used_to_guess_passwords(client: Client, staff: Any) -> None:
    # Posting credentials to Django's own admin login does nothing: only
    # allauth's rate-limited login signs anyone in.
    response = client.post("/admin/login/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_admin_sign_in_is_rate_limited(client: Client, staff: Any) -> None:
    for _ in range(5):
        client.post("/accounts/login/", {"login": staff.email, "password": "guess"})
    response = client.post(
        "/accounts/login/?next=/admin/", {"login": staff.email, "password": PASSWORD}
    )
    assert b"Too many failed login attempts" in response.content
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_staff_reach_the_admin_after_signing_in(client: Client, staff: Any) -> None:
    response = client.post(
        "/accounts/login/?next=/admin/", {"login": staff.email, "password": PASSWORD}
    )
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_a_signed_in_non_staff_user_is_refused(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get("/admin/login/").status_code == 403


@pytest.mark.django_db
def test_staff_manage_users_in_the_admin(client: Client, staff: Any, alice: Any) -> None:
    client.force_login(staff)
    listing = client.get("/admin/accounts/user/?q=alice")
    assert listing.status_code == 200
    assert b"alice@example.com" in listing.content

    change = client.get(f"/admin/accounts/user/{alice.pk}/change/")
    assert change.status_code == 200

    add = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "frank@example.com",
            "usable_password": "true",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert add.status_code == 302, add.content
    assert User.objects.get(email="frank@example.com").check_password(PASSWORD)
