"""Presets: a user's saved ways to start a chat (model, system prompt, parameters),
one of which may be the default a new chat starts with. The canonical writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404

from conversations import parameters as model_parameters
from conversations.models import Preset
from conversations.turns import ChatRefused, check_model
from pricing.models import price_for
from providers import registry

if TYPE_CHECKING:
    from accounts.models import User

MAX_PRESETS = 100


def preset_for_user(user: User, pk: object) -> Preset:
    try:
        return Preset.objects.get(user=user, pk=int(str(pk)))
    except (Preset.DoesNotExist, ValueError):
        raise Http404("No such preset.") from None


def preset_save(
    *,
    user: User,
    name: str,
    provider: str,
    model: str,
    system_prompt: str = "",
    parameters: Any = None,
    is_default: bool = False,
    pk: object = None,
) -> Preset:
    """Create a preset, or (with `pk`) replace one of the user's; ChatRefused(400)."""
    name = " ".join(name.split())
    if not name or len(name) > 100:
        raise ChatRefused(
            400, "invalid", "A preset needs a name of up to 100 characters.", field="name"
        )
    check_model(provider, model)
    if len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS or "\x00" in system_prompt:
        raise ChatRefused(400, "invalid", "The system prompt is too long.", field="system_prompt")
    adapter = registry.get(provider)
    try:
        cleaned = model_parameters.clean(adapter, parameters or {}, price_for(provider, model))
    except model_parameters.InvalidParameter as exc:
        raise ChatRefused(400, "invalid", exc.message, field=exc.field) from None
    with transaction.atomic():
        if pk is not None:
            preset = preset_for_user(user, pk)
        else:
            if Preset.objects.filter(user=user).count() >= MAX_PRESETS:
                raise ChatRefused(400, "too_many", f"Up to {MAX_PRESETS} presets.", field="name")
            preset = Preset(user=user)
        if is_default:
            Preset.objects.filter(user=user, is_default=True).exclude(pk=preset.pk).update(
                is_default=False
            )
        preset.name = name
        preset.provider = provider
        preset.model = adapter.canonical_model(model)
        preset.system_prompt = system_prompt
        preset.parameters = cleaned
        preset.is_default = is_default
        try:
            with transaction.atomic():
                preset.save()
        except IntegrityError:
            raise ChatRefused(
                409, "exists", "You have a preset of that name already.", field="name"
            ) from None
    return preset


def preset_delete(*, user: User, pk: object) -> None:
    preset_for_user(user, pk).delete()
