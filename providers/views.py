"""The keys page: add, replace, test and delete a key per provider. Plain forms,
no JavaScript needed (static/js/keys.js tests a typed key without a reload)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from providers import registry
from providers.keys import provider_key_delete, provider_key_save, provider_key_test
from providers.models import ProviderKey


def _provider(name: str) -> str:
    if name not in registry.key_providers():
        raise Http404("No such provider.")
    return name


def _cards(
    user: Any,
    errors: dict[str, dict[str, str]] | None = None,
    tested: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
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
                "test_result": (tested or {}).get(name),
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
    if request.POST.get("action") == "test":
        return _test_typed_key(request, provider)
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


@sensitive_variables()
def _test_typed_key(request: HttpRequest, provider: str) -> HttpResponse:
    """The form's Test button without JavaScript: the typed key (or, if the field
    still shows the masked one, the saved key) is tried and nothing is saved. The
    key is not written back into the page: it is pasted again to be saved."""
    key = request.POST.get("key", "").strip()
    saved = ProviderKey.objects.for_user(request.user).filter(provider=provider).first()  # type: ignore[arg-type]
    try:
        result = async_to_sync(provider_key_test)(
            user=request.user,  # type: ignore[arg-type]
            provider=provider,
            key=None if not key or (saved is not None and key == saved.masked) else key,
            base_url=request.POST.get("base_url", ""),
        )
    except ValidationError as exc:
        errors = {field: " ".join(msgs) for field, msgs in exc.message_dict.items()}
        cards = _cards(request.user, {provider: errors})
        return render(request, "providers/keys.html", {"cards": cards}, status=400)
    works = "The key works. Paste it again and save it to use it."
    message = works if result.valid else result.message
    tested = {provider: {"valid": result.valid, "message": message}}
    return render(request, "providers/keys.html", {"cards": _cards(request.user, tested=tested)})


@require_http_methods(["GET", "POST"])
@login_required
def key_delete(request: HttpRequest, provider: str) -> HttpResponse:
    """GET asks to confirm; POST deletes."""
    provider = _provider(provider)
    if request.method == "GET":
        card = next(c for c in _cards(request.user) if c["name"] == provider)
        if card["key"] is None:
            return redirect("providers:keys")
        return render(request, "providers/key_delete.html", {"card": card})
    if provider_key_delete(user=request.user, provider=provider):  # type: ignore[arg-type]
        messages.success(request, "Key deleted.")
    return redirect("providers:keys")
