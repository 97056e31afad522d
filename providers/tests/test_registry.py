import os
import subprocess
import sys
from typing import Any

import pytest

from llmchat.tests.test_settings import BASE_DIR
from providers import registry


def test_every_provider_is_registered_by_its_api_name() -> None:
    assert registry.PROVIDER_NAMES == ("openai", "anthropic", "google", "compatible", "demo")
    assert set(registry.key_providers()) == {"openai", "anthropic", "google", "compatible"}


def test_operators_can_turn_the_demo_off(settings: Any) -> None:
    assert "demo" in registry.enabled()
    settings.DEMO_PROVIDER = False
    assert "demo" not in registry.enabled()
    with pytest.raises(registry.UnknownProvider):
        registry.get("demo")


def test_commands_start_without_importing_the_sdks() -> None:
    # Each SDK takes up to a second to import; only servers preload them.
    code = (
        "import os, sys, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'llmchat.settings'; "
        "django.setup(); import providers.registry, conversations.api; "
        "print(sorted(m for m in ('openai', 'anthropic', 'google.genai') if m in sys.modules))"
    )
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "ENV_FILE": "", "DEBUG": "true"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
    preload = subprocess.run(
        [
            sys.executable,
            "-c",
            code.replace(
                "conversations.api;", "conversations.api; providers.registry.preload_sdks();"
            ),
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert preload.stdout.strip() == "['anthropic', 'google.genai', 'openai']"
