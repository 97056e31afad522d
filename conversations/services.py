"""Conversation writes outside the chat turn (conversations.turns): renaming and
deleting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from conversations.models import Conversation
from conversations.selectors import conversation_for_user
from conversations.turns import ChatRefused

if TYPE_CHECKING:
    from accounts.models import User


def conversation_rename(*, user: User, pk: object, title: str) -> Conversation:
    conversation = conversation_for_user(user, pk)
    title = " ".join(title.replace("\x00", "").split())
    if not title:
        raise ChatRefused(400, "required", "A title cannot be empty.", field="title")
    if len(title) > 200:
        raise ChatRefused(400, "too_long", "Titles are limited to 200 characters.", field="title")
    conversation.title = title
    conversation.save(update_fields=["title"])
    return conversation


def conversation_file(
    *, user: User, pk: object, pinned: bool | None = None, archived: bool | None = None
) -> Conversation:
    """Pin or unpin a conversation, archive or bring it back (None: as it is)."""
    conversation = conversation_for_user(user, pk)
    changes = {
        name: value
        for name, value in (("pinned", pinned), ("archived", archived))
        if value is not None
    }
    for name, value in changes.items():
        setattr(conversation, name, value)
    if changes:
        conversation.save(update_fields=list(changes))
    return conversation


def conversation_delete(*, user: User, pk: object) -> None:
    """Delete a conversation and its messages. Its usage stays in the ledger.

    The conversation is locked first, the order every turn takes its rows in
    (conversation, ledger row, reply): a turn starting meanwhile waits and then
    finds no conversation, instead of adding a message to one being deleted."""
    with transaction.atomic():
        conversation = conversation_for_user(user, pk)
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        conversation.delete()
