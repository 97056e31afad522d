import pytest

from accounts.models import User


@pytest.mark.django_db
def test_it_logs_in_by_email_and_has_no_username() -> None:
    user = User.objects.create_user(email="Alice@EXAMPLE.com", password="pw-123456789")
    assert user.email == "Alice@example.com"
    assert User.USERNAME_FIELD == "email"
    assert not hasattr(user, "username") or user.username is None
    assert user.check_password("pw-123456789")
    assert not user.is_staff
    assert str(user) == "Alice@example.com"


@pytest.mark.django_db
def test_it_requires_an_email() -> None:
    with pytest.raises(ValueError, match="email address is required"):
        User.objects.create_user(email="", password="x")


@pytest.mark.django_db
def test_it_creates_superusers() -> None:
    admin = User.objects.create_superuser(email="root@example.com", password="pw-123456789")
    assert admin.is_staff
    assert admin.is_superuser
    with pytest.raises(ValueError, match="superuser"):
        User.objects.create_superuser(email="x@example.com", password="p", is_staff=False)
