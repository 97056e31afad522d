"""The encrypted field for API keys, failing closed.

django-fernet-encrypted-fields derives its Fernet keys from SECRET_KEY and
SECRET_KEY_FALLBACKS. When none of them can decrypt a value it silently returns
the ciphertext, which would then be sent to a provider as if it were the key, or
encrypted a second time on the next save. This field returns an `UnreadableSecret`
instead, which cannot be used as a key and refuses to be saved.
"""

from __future__ import annotations

import re
from typing import Any

from encrypted_fields.fields import EncryptedTextField

# What a Fernet token looks like: version byte 0x80 ("gAAAAA" in base64) and at
# least 73 bytes. No provider issues API keys of that shape.
_FERNET_TOKEN = re.compile(r"^gAAAAA[A-Za-z0-9_-]{60,}={0,2}$")


class UnreadableSecret:
    """A stored secret that none of the current keys can decrypt."""

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "<unreadable secret>"

    def __bool__(self) -> bool:
        return False


def looks_encrypted(value: str) -> bool:
    return bool(_FERNET_TOKEN.match(value))


class SecretKeyField(EncryptedTextField):
    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if isinstance(value, str) and looks_encrypted(value):
            return UnreadableSecret()
        return value

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, UnreadableSecret) or (
            isinstance(value, str) and looks_encrypted(value)
        ):
            raise ValueError("refusing to store a secret that could not be decrypted")
        return super().get_prep_value(value)

    def reset_keys(self) -> None:
        """Forget the derived Fernet keys (after SECRET_KEY changes, in tests)."""
        for name in ("keys", "f"):
            self.__dict__.pop(name, None)
