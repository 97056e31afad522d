"""The keys page: add, replace, test and delete a key per provider. Plain forms,
no JavaScript needed."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from providers import registry
from providers.keys import provider_key_delete, provider_key_save, provider_key_test
from providers.models import ProviderKey


def _provider(name: str) -> str:
    if name not in registry.key_providers():
        raise Http404("No such provider.")
    return name


def _cards(user: Any, errors: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    saved = {k.provider: k for k in ProviderKey.objects.for_user(user)}
    cards = []
    for name, provider in registry.key_providers().items():
        server = settings.ALLOW_SERVER_KEYS and provider.server_credentials() is not None
        cards.append(
            {
                "name": name,
                "label": provider.label,
                "key": saved.get(name),
                "takes_base_url": provider.user_base_url,
                "server_key": server,
                "errors": (errors or {}).get(name, {}),
            }
        )
    return cards


@login_required
def keys(request: HttpRequest) -> HttpResponse:
    return render(request, "providers/keys.html", {"cards": _cards(request.user)})


@sensitive_post_parameters("key")
@sensitive_variables()
@require_POST
@login_required
def key_save(request: HttpRequest, provider: str) -> HttpResponse:
    provider = _provider(provider)
    try:
        record = provider_key_save(
            user=request.user,  # type: ignore[arg-type]
            provider=provider,
            key=request.POST.get("key", ""),
            base_url=request.POST.get("base_url", ""),
        )
    except ValidationError as exc:
        errors = {field: " ".join(msgs) for field, msgs in exc.message_dict.items()}
        cards = _cards(request.user, {provider: errors})
        return render(request, "providers/keys.html", {"cards": cards}, status=400)
    messages.success(request, f"Saved your {record.get_provider_display()} key {record.masked}.")
    return redirect("providers:keys")


@require_POST
@login_required
def key_delete(request: HttpRequest, provider: str) -> HttpResponse:
    provider = _provider(provider)
    if provider_key_delete(user=request.user, provider=provider):  # type: ignore[arg-type]
        messages.success(request, "Key deleted.")
    return redirect("providers:keys")


@require_POST
@login_required
async def key_test(request: HttpRequest, provider: str) -> HttpResponse:
    provider = _provider(provider)
    user = await request.auser()
    result = await provider_key_test(user=user, provider=provider)  # type: ignore[arg-type]
    label = registry.get(provider).label
    if result.valid:
        await sync_to_async(messages.success)(request, f"Your {label} key works.")
    else:
        await sync_to_async(messages.error)(request, f"{label}: {result.message}")
    return redirect("providers:keys")
