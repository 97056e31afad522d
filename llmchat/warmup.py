"""What a server process loads before its first request, so that the first user
of each worker does not wait for it: the provider SDKs, the URLconf (and the
views it imports), and the project's templates, each compiled once by the cached
template loader. gunicorn's workers call it when they load the app (llmchat.asgi),
before they freeze what they loaded out of the garbage collector's sight."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.template.loader import get_template
from django.urls import get_resolver

from providers.registry import preload_sdks


def warm_up() -> None:
    preload_sdks()
    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018 - imports every app's urls and views
    resolver.reverse_dict  # noqa: B018 - what reverse() and {% url %} look names up in
    for name in settings.TEMPLATES[0]["DIRS"]:  # type: ignore[attr-defined]
        directory = Path(name)
        for path in sorted(directory.rglob("*.html")):
            get_template(str(path.relative_to(directory)))
