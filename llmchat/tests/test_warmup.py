"""llmchat.warmup: what a worker loads before its first request."""

from typing import Any

from django.template import engines
from django.urls import clear_url_caches, get_resolver

from llmchat.warmup import warm_up


def test_the_templates_and_the_urlconf_are_loaded_before_the_first_request() -> None:
    cached = engines["django"].engine.template_loaders[0]  # type: ignore[attr-defined]
    cached.reset()
    clear_url_caches()
    warm_up()
    loaded: Any = cached.get_template_cache
    for name in ("base.html", "conversations/chat.html", "conversations/usage.html"):
        assert name in loaded
    resolver = vars(get_resolver())
    assert "url_patterns" in resolver  # the URLconf and the views are imported
    assert resolver["_populated"]  # reverse() and {% url %} are ready too
