"""manage.py createsuperuser: the new superuser's address is verified, so they sign
in to the admin even when email verification is mandatory and no mail can be sent."""

import builtins
import getpass
import io
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command, get_commands
from django.test import Client

from accounts.models import User
from conftest import PASSWORD, make_user


@pytest.fixture(autouse=True)
def mandatory_verification(settings: Any) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"


def create(*args: str) -> str:
    out = io.StringIO()
    call_command("createsuperuser", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def reaches_the_admin(client: Client, email: str) -> bool:
    response = client.post("/accounts/login/?next=/admin/", {"login": email, "password": PASSWORD})
    return response["Location"] == "/admin/" and client.get("/admin/").status_code == 200


def test_the_command_is_this_apps() -> None:
    assert get_commands()["createsuperuser"] == "accounts"


@pytest.mark.django_db
def test_noinput_from_the_environment_can_sign_in_at_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "boss@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    assert "boss@example.com is marked verified" in create("--noinput")

    address = EmailAddress.objects.get(user__email="boss@example.com")
    assert (address.email, address.verified, address.primary) == ("boss@example.com", True, True)
    assert reaches_the_admin(client, "boss@example.com")


@pytest.mark.django_db
def test_noinput_with_the_email_option_can_sign_in_at_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    create("--noinput", "--email", "Boss@Example.COM")
    user = User.objects.get()
    assert user.is_superuser
    assert EmailAddress.objects.filter(user=user, verified=True, primary=True).exists()
    assert reaches_the_admin(client, "boss@example.com")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db
def test_interactive_can_sign_in_at_once(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the operator types: an address already taken, then a new one.
    make_user("taken@example.com")
    typed = iter(["taken@example.com", "boss@example.com"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(typed))
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": PASSWORD)
    call_command("createsuperuser", stdin=Terminal(), stdout=io.StringIO(), stderr=io.StringIO())

    user = User.objects.get(email="boss@example.com")
    assert user.is_superuser
    assert EmailAddress.objects.filter(user=user, verified=True, primary=True).exists()
    assert reaches_the_admin(client, "boss@example.com")
    taken = EmailAddress.objects.get(email="taken@example.com")
    assert taken.user.email == "taken@example.com"  # left as it was


@pytest.mark.django_db
def test_without_a_terminal_nothing_is_created_or_verified() -> None:
    out = io.StringIO()
    call_command("createsuperuser", stdin=io.StringIO(), stdout=out)
    assert "skipped" in out.getvalue()
    assert not User.objects.exists()
    assert not EmailAddress.objects.exists()


@pytest.mark.django_db
def test_an_address_another_account_has_verified_is_not_verified_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # allauth's unique email: the other account keeps it.
    other = make_user("boss@example.com")
    User.objects.filter(pk=other.pk).update(email="old-boss@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    create("--noinput", "--email", "boss@example.com")
    boss = User.objects.get(email="boss@example.com")
    assert not EmailAddress.objects.filter(user=boss, verified=True).exists()
