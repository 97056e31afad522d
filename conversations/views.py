"""The chat and usage pages: server-rendered, with one small script for the chat."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from conversations import budgets, charts, selectors
from conversations.models import Conversation, Preset
from conversations.serializers import preset_json
from providers import registry


@login_required
def chat(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    user: Any = request.user
    detail = None
    if pk is not None:
        detail = selectors.conversation_detail(user, pk)
    models = selectors.models_for_user(user)
    picker = [
        {
            "provider": m.provider,
            "provider_label": m.provider_label,
            "model": m.model,
            "name": m.name,
            "input": _plain(m.input_per_mtok),
            "output": _plain(m.output_per_mtok),
            "available": m.available,
            "favourite": m.favourite,
        }
        for m in models
    ]
    # An OpenAI-compatible server's models are the user's own: typed, not listed.
    compatible = any(m.provider == "compatible" for m in models) or _compatible_available(user)
    current = None
    if detail is not None:
        current = {"provider": detail.conversation.provider, "model": detail.conversation.model}
        _keep_selectable(picker, current)
    mine = list(selectors.presets_for_user(user))
    starting = None
    if detail is None:
        current, starting = _new_chat_start(user, models, mine)
    return render(
        request,
        "conversations/chat.html",
        {
            "detail": detail,
            "groups": sidebar_groups(selectors.conversation_list(user)[:200]),
            "archived": selectors.conversation_list(user, archived=True)[:200],
            "picker": picker,
            "current": current,
            "has_unavailable": any(not m.available for m in models),
            "has_favourites": any(m.favourite for m in models),
            "compatible": compatible,
            "budget": budgets.budget_status_if_limited(user),
            "reasoning_efforts": registry.get("openai").reasoning_efforts,
            "presets": [{**shown, "json": json.dumps(shown)} for shown in map(preset_json, mine)],
            # What a new chat starts with beyond its model: the default preset's.
            "starting": {
                "id": starting.pk if starting else None,
                "system_prompt": starting.system_prompt if starting else "",
                "parameters": starting.parameters if starting else {},
            },
        },
    )


def _new_chat_start(
    user: Any, models: list[Any], mine: list[Preset]
) -> tuple[dict[str, str] | None, Preset | None]:
    """What a new chat starts with: the user's default preset; else the model of
    their last conversation, if they may still use it; else the first model they
    may use that is not the demo; else the demo. (The preset, or None.)"""
    usable = {(m.provider, m.model) for m in models if m.available}
    preset = next((p for p in mine if p.is_default), None)
    if preset is not None and (
        preset.provider == "compatible" or (preset.provider, preset.model) in usable
    ):
        return {"provider": preset.provider, "model": preset.model}, preset
    last = selectors.last_model_used(user)
    if last is not None and last in usable:
        return {"provider": last[0], "model": last[1]}, None
    ranked = sorted((m for m in models if m.available), key=lambda m: m.provider == "demo")
    if ranked:
        return {"provider": ranked[0].provider, "model": ranked[0].model}, None
    return None, None


def sidebar_groups(conversations: Any) -> list[tuple[str, list[Conversation]]]:
    """The sidebar's conversations under headings: Pinned, then by the day of their
    last message: Today, Yesterday, Previous 7 days, Older (empty ones left out). By
    the server's TIME_ZONE here; the page lays them out again in the reader's own."""
    today = timezone.localdate()
    groups: dict[str, list[Conversation]] = {
        "Pinned": [],
        "Today": [],
        "Yesterday": [],
        "Previous 7 days": [],
        "Older": [],
    }
    for c in conversations:
        age = (today - timezone.localdate(c.updated)).days
        if c.pinned:
            label = "Pinned"
        elif age <= 0:
            label = "Today"
        elif age == 1:
            label = "Yesterday"
        elif age <= 7:
            label = "Previous 7 days"
        else:
            label = "Older"
        groups[label].append(c)
    return [(label, items) for label, items in groups.items() if items]


def _keep_selectable(picker: list[dict[str, Any]], current: dict[str, str]) -> None:
    """A conversation's model stays selected when the price table does not offer
    it (one its provider listed): added to its provider's group, unpriced."""
    group = [i for i, m in enumerate(picker) if m["provider"] == current["provider"]]
    if current["provider"] == "compatible" or not group:  # typed in / no longer offered
        return
    if any(picker[i]["model"] == current["model"] for i in group):
        return
    entry = {**picker[group[0]], "model": current["model"], "name": current["model"]}
    picker.insert(group[-1] + 1, {**entry, "input": None, "output": None})


def _plain(price: Decimal | None) -> str | None:
    """A price per 1M tokens as people write it: 2.5, 0.075, 10."""
    if price is None:
        return None
    text = format(price, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _compatible_available(user: Any) -> bool:
    from django.conf import settings

    from providers.models import ProviderKey

    if "compatible" not in registry.enabled():
        return False
    if ProviderKey.objects.for_user(user).filter(provider="compatible").exists():
        return True
    return bool(settings.ALLOW_SERVER_KEYS and settings.COMPATIBLE_BASE_URL)


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    since, month_end = budgets.month_bounds()
    summary = selectors.usage_summary(user, since, None)
    today = timezone.now().date()
    chart = charts.daily_cost(summary["by_day"], since.date(), today, month_end.date())
    return render(
        request,
        "conversations/usage.html",
        {
            "summary": summary,
            "since": since,
            "month_end": month_end,
            "chart": chart,
            "budget": budgets.budget_status_if_limited(user),
        },
    )
