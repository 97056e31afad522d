"""Provider keys: saving, testing, deleting, and choosing the key for a call.

The seed's UserService.save_api_keys / get_api_key, with the rules a multi-user
server needs: keys are encrypted at rest and only ever shown masked; a user's own
key wins over the operator's; a server key never goes to a user's base URL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from providers import registry
from providers.base import Credentials, ProviderError
from providers.fields import UnreadableSecret
from providers.models import ProviderKey, mask
from providers.urlsafety import UnsafeURLError, validate_base_url

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 500


class KeyProblem(Exception):
    """No usable key for a call. `code`: no_key | key_unreadable | unknown_provider."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class KeyTestResult:
    valid: bool
    code: str = ""
    message: str = ""


def _invalid(field: str, message: str, code: str) -> ValidationError:
    return ValidationError({field: ValidationError(message, code=code)})


def _provider_for_keys(provider: str) -> str:
    if provider not in registry.key_providers():
        raise _invalid("provider", "Unknown provider.", "unknown_provider")
    return provider


@sensitive_variables("key")
def _clean_key(provider: str, key: str) -> str:
    key = (key or "").strip()
    if not key:
        raise _invalid("key", "Enter an API key.", "required")
    if len(key) > MAX_KEY_LENGTH:
        raise _invalid("key", "That is too long to be an API key.", "too_long")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise _invalid("key", "An API key has no spaces or line breaks.", "invalid_key_format")
    adapter = registry.get(provider)
    if adapter.key_pattern is not None and not adapter.key_pattern.fullmatch(key):
        raise _invalid(
            "key",
            f"That does not look like a key for {adapter.label}: theirs {adapter.key_shape}.",
            "invalid_key_format",
        )
    return key


def _clean_base_url(provider: str, base_url: str) -> str:
    base_url = (base_url or "").strip()
    if provider != "compatible":
        if base_url:
            raise _invalid(
                "base_url",
                "Only the OpenAI-compatible provider takes a base URL.",
                "base_url_not_allowed",
            )
        return ""
    if not base_url:
        raise _invalid(
            "base_url", "Enter the base URL of your OpenAI-compatible server.", "required"
        )
    try:
        return validate_base_url(base_url)
    except UnsafeURLError as exc:
        raise _invalid("base_url", str(exc), "unsafe_url") from None


def provider_key_get(*, user: User, provider: str) -> ProviderKey | None:
    return ProviderKey.objects.for_user(user).filter(provider=provider).first()


# All: the frames under this one (the field encrypting the key) hold it too.
@sensitive_variables()
def provider_key_save(*, user: User, provider: str, key: str, base_url: str = "") -> ProviderKey:
    """Save (or replace) the user's key for a provider.

    Submitting the masked value that the page shows leaves the stored key as it
    is, so a form can be re-saved (say, with a new base URL) without retyping it.
    """
    provider = _provider_for_keys(provider)
    base_url = _clean_base_url(provider, base_url)
    with transaction.atomic():
        existing = (
            ProviderKey.objects.select_for_update().filter(user=user, provider=provider).first()
        )
        if existing is not None and (key or "").strip() == existing.masked:
            existing.base_url = base_url
            existing.full_clean(exclude=["key"])
            existing.save(update_fields=["base_url", "updated"])
            return existing
        key = _clean_key(provider, key)
        record = existing or ProviderKey(user=user, provider=provider)
        record.key = key  # type: ignore[assignment]  # the field encrypts it
        record.masked = mask(key)
        record.base_url = base_url
        record.full_clean(exclude=["key", "user"])
        record.save()
    logger.info(
        "provider key saved",
        extra={"user_id": user.pk, "provider": provider, "masked": record.masked},
    )
    return record


def provider_key_delete(*, user: User, provider: str) -> bool:
    deleted, _ = ProviderKey.objects.for_user(user).filter(provider=provider).delete()
    if deleted:
        logger.info("provider key deleted", extra={"user_id": user.pk, "provider": provider})
    return bool(deleted)


@sensitive_variables()
async def provider_key_test(
    *, user: User, provider: str, key: str | None = None, base_url: str = ""
) -> KeyTestResult:
    """Check a key with a cheap call (listing models).

    With `key`, the candidate is tested and nothing is saved; without, the saved one.
    """
    from asgiref.sync import sync_to_async

    provider = _provider_for_keys(provider)
    if key is None:
        record = await ProviderKey.objects.for_user(user).filter(provider=provider).afirst()
        if record is None:
            return KeyTestResult(False, "no_key", "No key is saved for this provider.")
        if isinstance(record.key, UnreadableSecret):
            return KeyTestResult(False, "key_unreadable", _UNREADABLE)
        creds = _user_credentials(provider, record.key, record.base_url)
    else:
        clean_url = await sync_to_async(_clean_base_url)(provider, base_url)
        creds = _user_credentials(provider, _clean_key(provider, key), clean_url)
    try:
        await registry.get(provider).check_key(creds)
    except ProviderError as exc:
        # invalid_key is the verdict; anything else (rate limit, outage) is said as it is.
        return KeyTestResult(False, exc.code, exc.message)
    return KeyTestResult(True, "", "The key works.")


_UNREADABLE = (
    "Your saved key can no longer be read (the server's secret key changed). Save it again."
)


@sensitive_variables()
def _user_credentials(provider: str, key: str, base_url: str) -> Credentials:
    # A user's key goes to the operator's base URL, except for the compatible
    # provider, where the user's own server is the point.
    adapter = registry.get(provider)
    base = base_url if adapter.user_base_url else adapter.operator_base_url()
    return Credentials(api_key=key, base_url=base, key_source="user")


LAST_USED_PRECISION = timedelta(minutes=1)


# All: the frames under this one (the field decrypting the key) hold it too.
@sensitive_variables()
def credentials_for(*, user: User, provider: str) -> Credentials:
    """The key a call for this user and provider is made with.

    The user's own key first; else the operator's server key when
    ALLOW_SERVER_KEYS is on (recorded as key_source="server"); else KeyProblem.
    """
    creds, record = _credentials(user, provider)
    if record is not None:
        now = timezone.now()
        if record.last_used is None or now - record.last_used >= LAST_USED_PRECISION:
            # To the minute (the pages say "3 minutes ago"): not a write every turn.
            ProviderKey.objects.filter(pk=record.pk).update(last_used=now)
    return creds


@sensitive_variables()
def _credentials(user: User, provider: str) -> tuple[Credentials, ProviderKey | None]:
    """credentials_for's choice, with the user's key record when it is theirs."""
    try:
        adapter = registry.get(provider)
    except registry.UnknownProvider:
        raise KeyProblem("unknown_provider", "Unknown provider.") from None
    if not adapter.needs_key:
        return adapter.server_credentials() or Credentials("", "", "none"), None
    record = provider_key_get(user=user, provider=provider)
    if record is not None:
        if isinstance(record.key, UnreadableSecret):
            logger.error(
                "provider key unreadable",
                extra={"user_id": user.pk, "provider": provider, "key_id": record.pk},
            )
            raise KeyProblem("key_unreadable", _UNREADABLE)
        return _user_credentials(provider, record.key, record.base_url), record
    if settings.ALLOW_SERVER_KEYS:
        server = adapter.server_credentials()
        if server is not None:
            return server, None
    raise KeyProblem(
        "no_key",
        f"Add your {adapter.label} API key on the keys page to use this model.",
    )


LISTING_SECONDS = 3600
"""How long a provider's list of models is kept before it is asked again."""


@dataclass(frozen=True)
class Listing:
    models: list[str]
    key_source: str


@sensitive_variables()
async def models_listed(*, user: User, provider: str) -> Listing:
    """The chat models the provider lists for the key this user's calls go out
    with, kept for LISTING_SECONDS per key. KeyProblem without a key,
    ProviderError when the provider does not answer."""
    from asgiref.sync import sync_to_async

    creds, record = await sync_to_async(_credentials)(user, provider)
    if record is not None:  # a new key, or a new base URL, is asked again
        cache_key = f"models-listed:{provider}:key:{record.pk}:{record.updated.timestamp()}"
    else:
        cache_key = f"models-listed:{provider}:{creds.key_source}"
    models = await cache.aget(cache_key)
    if models is None:
        models = await registry.get(provider).list_models(creds)
        await cache.aset(cache_key, models, LISTING_SECONDS)
    return Listing(models, creds.key_source)
