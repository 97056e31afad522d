from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

if TYPE_CHECKING:
    from accounts.models import User


class Status(models.TextChoices):
    GENERATING = "generating", "generating"
    COMPLETE = "complete", "complete"
    PARTIAL = "partial", "partial"  # the provider failed or went silent mid-reply
    ERROR = "error", "error"  # nothing usable came back
    STOPPED = "stopped", "stopped"  # the user pressed Stop (or went away)


class KeySource(models.TextChoices):
    USER = "user", "user's key"
    SERVER = "server", "server key"
    NONE = "none", "no key"


def conversation_label(pk: object) -> str:
    """A conversation named without its title."""
    return f"Conversation #{pk}"


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def for_user(self, user: User) -> ConversationQuerySet:
        return self.filter(user=user)


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)
    # While a reply streams, the conversation is taken until this time: a second
    # send gets 409 instead of forking the history. Expires on its own if the
    # process streaming it died.
    busy_until = models.DateTimeField(null=True, blank=True)
    # Pinned: at the top of the list. Archived: out of it, under "Archived".
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    # The model parameters the user set for this conversation (turns.PARAMETERS):
    # used by every turn until changed.
    parameters = models.JSONField(default=dict, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "-updated"])]
        ordering = ["-updated"]

    def __str__(self) -> str:
        # Not the title: it is the user's words, and str() is what the admin shows
        # wherever it names an object (ADMIN_CAN_READ_CHATS decides about contents).
        return conversation_label(self.pk)


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=[("user", "user"), ("assistant", "assistant")])
    content = models.TextField(blank=True)
    # The sanitized HTML of the content, rendered once when the reply is final.
    html = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    provider = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=200, blank=True)
    key_source = models.CharField(max_length=10, choices=KeySource.choices, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    # PROTECT: the price row a cost was computed with is kept to explain it.
    price = models.ForeignKey(
        "pricing.ModelPrice", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Priced at its provider's fallback price: the model has no price of its own.
    fallback_price = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    client_message_id = models.CharField(max_length=64, blank=True)
    # Stop was asked for while it generated (from any tab): the process that runs
    # the generation reads it at its checkpoints.
    stop_requested = models.BooleanField(default=False)
    # The parameters the reply's call was made with (its conversation's, then).
    parameters = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=~Q(client_message_id=""),
                name="one_message_per_client_id",
            )
        ]
        indexes = [
            models.Index(
                fields=["status", "created"],
                condition=Q(status="generating"),
                name="generating_messages",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk}"

    @property
    def unpriced(self) -> bool:
        return self.role == "assistant" and self.cost is None and self.status != "generating"


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def for_user(self, user: User) -> UsageRecordQuerySet:
        return self.filter(user=user)

    def between(self, since: object = None, until: object = None) -> UsageRecordQuerySet:
        qs = self
        if since is not None:
            qs = qs.filter(created__gte=since)
        if until is not None:
            qs = qs.filter(created__lt=until)
        return qs


class UsageRecord(models.Model):
    """The ledger: one row per provider call, kept when the conversation or the
    message goes, because operators bill from it. The cost is the one computed at
    call time."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    # Who it was, should the account be deleted later.
    user_email = models.CharField(max_length=254)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The reply's message id, kept when the message is deleted: one ledger row per
    # reply, so a call finishing after its conversation was deleted is still
    # recorded, and only once.
    reply_id = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    key_source = models.CharField(max_length=10, choices=KeySource.choices)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    unpriced = models.BooleanField(default=False)
    estimated = models.BooleanField(default=False)
    # PROTECT: the price row a cost was computed with is kept to explain it.
    price = models.ForeignKey(
        "pricing.ModelPrice", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    fallback_price = models.BooleanField(default=False)
    outcome = models.CharField(max_length=12, choices=Status.choices)
    created = models.DateTimeField(default=timezone.now)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Covering on PostgreSQL: a user's month of spend (budgets, the users
            # admin) is read from the index alone.
            models.Index(
                fields=["user", "created"],
                include=["cost", "key_source"],
                name="usage_user_created",
            ),
            models.Index(fields=["created"]),
            models.Index(fields=["provider", "model", "created"]),
            # The sweeper's: calls still open (a handful among millions).
            models.Index(
                fields=["created"],
                condition=Q(outcome="generating"),
                name="open_calls",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.created:%Y-%m-%d %H:%M}"


class Preset(models.Model):
    """A saved way to start a chat: model, system prompt and parameters. A user's
    default preset (at most one) is what a new chat starts with."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presets"
    )
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    is_default = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="preset_name_unique_per_user"),
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(is_default=True),
                name="one_default_preset_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"Preset #{self.pk}"


class FavouriteModel(models.Model):
    """A model the user starred: the picker lists it first."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="favourite_models"
    )
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "provider", "model"], name="favourite_model_unique_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"
