from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from providers import keys
from providers.fields import UnreadableSecret
from providers.models import ProviderKey

OLD = "old-secret-key-for-rotation-tests-" + "0123456789abcdef"
NEW = "new-secret-key-for-rotation-tests-" + "fedcba9876543210"
KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


def use_secrets(settings: Any, secret: str, fallbacks: list[str]) -> None:
    settings.SECRET_KEY = secret
    settings.SECRET_KEY_FALLBACKS = fallbacks
    ProviderKey._meta.get_field("key").reset_keys()


def ciphertext(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM providers_providerkey WHERE id = %s", [pk])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_with_the_new_secret(settings: Any, alice: Any) -> None:
    use_secrets(settings, OLD, [])
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    before = ciphertext(record.pk)

    # New secret, old one as a fallback: still readable, then rotated.
    use_secrets(settings, NEW, [OLD])
    assert ProviderKey.objects.get(pk=record.pk).key == KEY
    out = StringIO()
    call_command("rotate_keys", stdout=out)
    assert "Re-encrypted 1 key(s); 0 could not be read." in out.getvalue()
    assert ciphertext(record.pk) != before

    # The fallback can go now.
    use_secrets(settings, NEW, [])
    assert ProviderKey.objects.get(pk=record.pk).key == KEY
    use_secrets(settings, OLD, [])


@pytest.mark.django_db
def test_without_the_fallback_keys_are_unreadable_and_reported(settings: Any, alice: Any) -> None:
    use_secrets(settings, OLD, [])
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    use_secrets(settings, NEW, [])
    assert isinstance(ProviderKey.objects.get(pk=record.pk).key, UnreadableSecret)
    before = ciphertext(record.pk)
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("rotate_keys", stdout=StringIO(), stderr=err)
    assert "cannot be decrypted" in err.getvalue()
    assert ciphertext(record.pk) == before  # left alone, not double-encrypted
    use_secrets(settings, OLD, [])


@pytest.mark.django_db
def test_dry_run_changes_nothing(settings: Any, alice: Any) -> None:
    record = keys.provider_key_save(user=alice, provider="openai", key=KEY)
    before = ciphertext(record.pk)
    out = StringIO()
    call_command("rotate_keys", "--dry-run", stdout=out)
    assert "Would re-encrypt 1 key(s)" in out.getvalue()
    assert ciphertext(record.pk) == before
