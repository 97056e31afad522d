"""Provider keys: encrypted at rest, masked, failing closed, resolved per call."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from providers import keys
from providers.base import Credentials
from providers.fields import UnreadableSecret
from providers.models import ProviderKey, mask

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


def reset_cipher() -> None:
    field = ProviderKey._meta.get_field("key")
    field.reset_keys()


@pytest.fixture(autouse=True)
def _fresh_cipher() -> Any:
    reset_cipher()
    yield
    reset_cipher()


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd", "sk-proj-…abcd"),
        ("sk-ant-api03-AAAAAAAAAAAAAAAAAAAAwxyz", "sk-ant-…wxyz"),
        ("AIzaSyA-1234567890abcdefghijklmnop", "AI…mnop"),
        ("sk-abcdefghijklmnop1234", "sk-…1234"),
        ("ollama-key", "…ey"),
        ("short", "••••"),
    ],
)
def test_masking(secret: str, masked: str) -> None:
    assert mask(secret) == masked


@pytest.mark.django_db
def test_keys_are_encrypted_at_rest(alice: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, masked FROM providers_providerkey WHERE id = %s", [record.pk])
        stored, masked = cursor.fetchone()
    assert KEY not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert masked == "sk-proj-…abcd"
    assert ProviderKey.objects.get(pk=record.pk).key == KEY


@pytest.mark.django_db
def test_one_key_per_user_and_provider(alice: Any) -> None:
    keys.provider_key_save(user=alice, provider="openai", key=KEY)
    keys.provider_key_save(user=alice, provider="openai", key="sk-second-key-000000000000zzzz")
    assert ProviderKey.objects.filter(user=alice).count() == 1
    assert ProviderKey.objects.get(user=alice).key == "sk-second-key-000000000000zzzz"


@pytest.mark.django_db
def test_resubmitting_the_masked_value_leaves_the_key_unchanged(alice: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    keys.provider_key_save(user=alice, provider="openai", key=record.masked)
    assert ProviderKey.objects.get(pk=record.pk).key == KEY


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "required"),
        ("   ", "required"),
        ("sk-has space", "invalid_key_format"),
        ("sk-line\nbreak", "invalid_key_format"),
        ("x" * 501, "too_long"),
    ],
)
def test_bad_keys_are_refused(alice: Any, key: str, code: str) -> None:
    with pytest.raises(ValidationError) as exc:
        keys.provider_key_save(user=alice, provider="openai", key=key)
    assert exc.value.error_dict["key"][0].code == code
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
def test_unknown_providers_and_stray_base_urls_are_refused(alice: Any) -> None:
    with pytest.raises(ValidationError):
        keys.provider_key_save(user=alice, provider="demo", key=KEY)
    with pytest.raises(ValidationError):
        keys.provider_key_save(user=alice, provider="nope", key=KEY)
    with pytest.raises(ValidationError) as exc:
        keys.provider_key_save(
            user=alice, provider="openai", key=KEY, base_url="https://example.com/v1"
        )
    assert "base_url" in exc.value.error_dict


@pytest.mark.django_db
def test_the_compatible_provider_needs_a_safe_base_url(alice: Any, mock_provider: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        keys.provider_key_save(user=alice, provider="compatible", key=KEY)
    assert "base_url" in exc.value.error_dict
    for unsafe in [
        "http://127.1:11434/v1",
        "http://169.254.169.254/",
        "file:///etc/passwd",
        "http://[::ffff:7f00:1]/v1",
        "http://metadata.google.internal/",
    ]:
        with pytest.raises(ValidationError) as exc:
            keys.provider_key_save(user=alice, provider="compatible", key=KEY, base_url=unsafe)
        assert exc.value.error_dict["base_url"][0].code == "unsafe_url"
    # The mock server is allow-listed by the operator, like a LAN Ollama.
    from django.conf import settings

    allowed = settings.ALLOWED_PRIVATE_BASE_URLS[0] + "/v1"
    record = keys.provider_key_save(user=alice, provider="compatible", key=KEY, base_url=allowed)
    assert record.base_url == allowed


@pytest.mark.django_db
def test_a_user_key_wins_over_the_server_key(alice: Any, settings: Any) -> None:
    settings.OPENAI_API_KEY = "sk-server-key-00000000000000000000"
    assert keys.credentials_for(user=alice, provider="openai") == Credentials(
        "sk-server-key-00000000000000000000", settings.OPENAI_BASE_URL, "server"
    )
    keys.provider_key_save(user=alice, provider="openai", key=KEY)
    creds = keys.credentials_for(user=alice, provider="openai")
    assert creds.api_key == KEY
    assert creds.key_source == "user"
    assert creds.base_url == settings.OPENAI_BASE_URL
    assert ProviderKey.objects.get(user=alice).last_used is not None


@pytest.mark.django_db
def test_last_used_is_kept_to_the_minute_not_written_every_call(alice: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    keys.provider_key_save(user=alice, provider="openai", key=KEY)
    keys.credentials_for(user=alice, provider="openai")
    first = ProviderKey.objects.get(user=alice).last_used
    keys.credentials_for(user=alice, provider="openai")
    assert ProviderKey.objects.get(user=alice).last_used == first  # no write
    earlier = timezone.now() - timedelta(minutes=2)
    ProviderKey.objects.filter(user=alice).update(last_used=earlier)
    keys.credentials_for(user=alice, provider="openai")
    latest = ProviderKey.objects.get(user=alice).last_used
    assert latest is not None
    assert latest > earlier


@pytest.mark.django_db
def test_server_keys_can_be_turned_off(alice: Any, settings: Any) -> None:
    settings.OPENAI_API_KEY = "sk-server-key-00000000000000000000"
    settings.ALLOW_SERVER_KEYS = False
    with pytest.raises(keys.KeyProblem) as exc:
        keys.credentials_for(user=alice, provider="openai")
    assert exc.value.code == "no_key"
    assert "Add your OpenAI API key" in exc.value.message


@pytest.mark.django_db
def test_a_server_key_never_goes_to_a_user_base_url(
    alice: Any, bob: Any, settings: Any, mock_provider: Any
) -> None:
    settings.COMPATIBLE_BASE_URL = "http://gateway.internal:4000/v1"
    settings.COMPATIBLE_API_KEY = "operator-gateway-key-000000"
    user_url = settings.ALLOWED_PRIVATE_BASE_URLS[0] + "/v1"
    keys.provider_key_save(user=alice, provider="compatible", key=KEY, base_url=user_url)
    mine = keys.credentials_for(user=alice, provider="compatible")
    assert (mine.api_key, mine.base_url, mine.key_source) == (KEY, user_url, "user")
    theirs = keys.credentials_for(user=bob, provider="compatible")
    assert theirs.base_url == "http://gateway.internal:4000/v1"
    assert theirs.key_source == "server"


@pytest.mark.django_db
def test_the_demo_needs_no_key(alice: Any) -> None:
    assert keys.credentials_for(user=alice, provider="demo").key_source == "none"


@pytest.mark.django_db
def test_a_key_encrypted_under_another_secret_fails_closed(alice: Any, settings: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    settings.SECRET_KEY = "a-completely-different-secret-key-" + "x1y2z3" * 5
    settings.SECRET_KEY_FALLBACKS = []
    reset_cipher()

    reloaded = ProviderKey.objects.get(pk=record.pk)
    assert isinstance(reloaded.key, UnreadableSecret)
    assert str(reloaded.key) == ""  # never the ciphertext
    with pytest.raises(keys.KeyProblem) as exc:
        keys.credentials_for(user=alice, provider="openai")
    assert exc.value.code == "key_unreadable"
    # Never re-saved (that would encrypt the ciphertext a second time).
    with pytest.raises(ValueError, match="could not be decrypted"):
        reloaded.save()
    # The masked form still shows which key it was.
    assert reloaded.masked == "sk-proj-…abcd"


@pytest.mark.django_db
def test_the_repr_of_credentials_hides_the_key() -> None:
    creds = Credentials(KEY, "https://api.openai.com/v1", "user")
    assert KEY not in repr(creds)
    assert KEY not in str(creds)
