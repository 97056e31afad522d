from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models

from providers.fields import SecretKeyField

if TYPE_CHECKING:
    from accounts.models import User

PROVIDER_CHOICES = [
    ("openai", "OpenAI"),
    ("anthropic", "Anthropic"),
    ("google", "Google Gemini"),
    ("compatible", "OpenAI-compatible"),
]


def mask(secret: str) -> str:
    """`sk-…abcd`: enough to recognise a key, never enough to use it."""
    if len(secret) < 12:
        return "…" + secret[-2:] if len(secret) >= 8 else "••••"
    prefix = re.match(r"^[A-Za-z]{2,4}-(?:[a-z]{2,8}-)?", secret)
    head = prefix.group(0) if prefix else secret[:2]
    return f"{head}…{secret[-4:]}"


class ProviderKeyQuerySet(models.QuerySet["ProviderKey"]):
    def for_user(self, user: User) -> ProviderKeyQuerySet:
        return self.filter(user=user)


class ProviderKey(models.Model):
    """A user's API key for one provider, encrypted at rest."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_keys"
    )
    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    key = SecretKeyField()
    # The masked form, kept apart so that lists never decrypt anything.
    masked = models.CharField(max_length=32)
    # Only for the compatible provider: the user's own server.
    base_url = models.URLField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    last_used = models.DateTimeField(null=True, blank=True)

    objects = ProviderKeyQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "provider"], name="one_key_per_provider")
        ]
        ordering = ["provider"]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} key {self.masked}"

    def __repr__(self) -> str:
        return f"<ProviderKey {self.pk} {self.provider} {self.masked}>"
