"""JSON API for a user's provider keys. Keys go in; only masked forms come out."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from llmchat.api import ApiError, api_view, read_json, string_field, validation_error
from providers import keys, registry
from providers.models import ProviderKey

MAX_BODY = 16 * 1024


def key_json(record: ProviderKey) -> dict[str, Any]:
    return {
        "provider": record.provider,
        "masked": record.masked,
        "base_url": record.base_url,
        "created_at": record.created.isoformat(),
        "last_used_at": record.last_used.isoformat() if record.last_used else None,
    }


def _provider(name: str) -> str:
    if name not in registry.key_providers():
        raise ApiError(404, "unknown_provider", "No such provider takes a key.")
    return name


@api_view(["GET"])
def key_list(request: HttpRequest) -> JsonResponse:
    records = keys.ProviderKey.objects.for_user(request.user)  # type: ignore[arg-type]
    return JsonResponse([key_json(r) for r in records], safe=False)


@sensitive_post_parameters("key")
@sensitive_variables()  # the key, and the frames under this one
@api_view(["PUT", "DELETE"])
def key_detail(request: HttpRequest, provider: str) -> JsonResponse:
    provider = _provider(provider)
    if request.method == "DELETE":
        if not keys.provider_key_delete(user=request.user, provider=provider):  # type: ignore[arg-type]
            raise ApiError(404, "not_found", "No key is saved for this provider.")
        return JsonResponse({"deleted": True})
    data = read_json(request, max_bytes=MAX_BODY)
    try:
        record = keys.provider_key_save(
            user=request.user,  # type: ignore[arg-type]
            provider=provider,
            key=string_field(data, "key"),
            base_url=string_field(data, "base_url", required=False),
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
    return JsonResponse(key_json(record))


@sensitive_post_parameters("key")
@sensitive_variables()
@api_view(["POST"])
async def key_test(request: HttpRequest, provider: str) -> JsonResponse:
    """Test the saved key, or a candidate {"key", "base_url"} without saving it."""
    provider = _provider(provider)
    data = await sync_to_async(read_json)(request, max_bytes=MAX_BODY)
    key = string_field(data, "key", required=False) or None
    try:
        result = await keys.provider_key_test(
            user=request.user,  # type: ignore[arg-type]
            provider=provider,
            key=key,
            base_url=string_field(data, "base_url", required=False),
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
    return JsonResponse({"valid": result.valid, "code": result.code, "message": result.message})
