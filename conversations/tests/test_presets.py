"""Presets: saved model, system prompt and parameters; the default one starts a new chat."""

import json
import re
from typing import Any

import pytest
from django.test import Client

from conversations.models import Conversation, FavouriteModel, Preset
from conversations.tests.test_browser import sign_in
from conversations.tests.test_chat_page import LAPTOP, PHONE, keyed_user
from llmchat.tests.browser import asgi_page

__all__ = ["asgi_page"]

GOOD = {
    "name": "Terse reviewer",
    "provider": "openai",
    "model": "gpt-4o",
    "system_prompt": "Review code tersely.",
    "parameters": {"temperature": 0.2},
}


def send(client: Client, method: str, url: str, body: Any = None) -> Any:
    return getattr(client, method)(url, json.dumps(body or {}), content_type="application/json")


@pytest.mark.django_db
def test_presets_are_saved_listed_replaced_and_deleted(
    client: Client, alice: Any, bob: Any
) -> None:
    client.force_login(alice)
    made = send(client, "post", "/api/presets", {**GOOD, "default": True})
    assert made.status_code == 201
    preset = made.json()
    assert preset["default"] is True
    assert preset["parameters"] == {"temperature": 0.2}
    other = send(client, "post", "/api/presets", {**GOOD, "name": "Other", "default": True}).json()
    # One default at a time.
    listed = client.get("/api/presets").json()
    assert [(p["name"], p["default"]) for p in listed] == [
        ("Other", True),
        ("Terse reviewer", False),
    ]
    replaced = send(
        client, "put", f"/api/presets/{preset['id']}", {**GOOD, "system_prompt": "Be kind."}
    )
    assert replaced.json()["system_prompt"] == "Be kind."
    # Names are unique per user.
    assert send(client, "post", "/api/presets", GOOD).status_code == 409
    # Someone else's presets are not found.
    client.force_login(bob)
    assert client.get("/api/presets").json() == []
    assert send(client, "delete", f"/api/presets/{other['id']}").status_code == 404
    client.force_login(alice)
    assert send(client, "delete", f"/api/presets/{other['id']}").json() == {"deleted": True}
    assert list(Preset.objects.values_list("name", flat=True)) == ["Terse reviewer"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"provider": "nope"}, "provider"),
        ({"model": ""}, "model"),
        (
            {"parameters": {"reasoning_effort": "high"}, "provider": "anthropic"},
            "parameters.reasoning_effort",
        ),
        ({"parameters": {"temperature": 5}}, "parameters.temperature"),
        ({"default": "yes"}, "default"),
    ],
)
def test_a_bad_preset_is_refused(client: Client, alice: Any, change: Any, field: str) -> None:
    client.force_login(alice)
    response = send(client, "post", "/api/presets", {**GOOD, **change})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert not Preset.objects.exists()


def selected_model(html: str) -> str:
    picker = html.split('id="model-picker"')[1].split("</select>")[0]
    chosen = re.findall(r'<option value="([^"]+)"[^>]*?\bselected\b', picker)
    assert len(chosen) == 1, chosen
    return chosen[0]


@pytest.mark.django_db
def test_a_new_chat_starts_with_the_default_preset(
    client: Client, alice: Any, prices: None, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-key-for-the-picker-0000000"
    Conversation.objects.create(user=alice, provider="openai", model="gpt-4o-mini")
    Preset.objects.create(user=alice, **GOOD, is_default=True)
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert selected_model(html) == "openai|gpt-4o"  # the preset's, not the last used
    assert ">Review code tersely.</textarea>" in html
    assert re.search(r'id="param-temperature"[^>]*value="0.2"', html)
    assert re.search(r'<option value="\d+"[^>]*selected>Terse reviewer \(default\)</option>', html)


@pytest.mark.django_db
def test_without_a_preset_a_new_chat_starts_with_the_last_model_used_not_the_demo(
    client: Client, alice: Any, prices: None, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-key-for-the-picker-0000000"
    client.force_login(alice)
    # Nothing used yet: a real model the user may use, not the demo.
    assert not selected_model(client.get("/").content.decode()).startswith("demo|")
    from datetime import timedelta

    from django.utils import timezone

    # A pinned conversation is listed first, but it is not the last one used.
    Conversation.objects.create(
        user=alice,
        provider="openai",
        model="gpt-4o",
        pinned=True,
        updated=timezone.now() - timedelta(days=3),
    )
    Conversation.objects.create(user=alice, provider="openai", model="gpt-4o-mini")
    assert selected_model(client.get("/").content.decode()) == "openai|gpt-4o-mini"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_person_saves_a_preset_makes_it_the_default_and_a_new_chat_starts_with_it(
    asgi_page: Any, mock_provider: Any, prices: None, size: dict[str, int]
) -> None:
    page = asgi_page
    page.set_viewport_size(size)
    sign_in(page, keyed_user("max@example.com"))
    page.on("dialog", lambda d: d.accept("Careful") if d.type == "prompt" else d.accept())

    def settings_shown() -> None:
        if size == PHONE:  # the settings fold away on a phone
            page.click("#settings-toggle")

    settings_shown()
    page.select_option("#model-picker", "openai|gpt-4o")
    page.click("details.system-prompt summary")
    page.fill("#system-prompt", "Answer carefully.")
    page.click("#parameters summary")
    page.fill("#param-temperature", "0.3")
    page.click("#preset-save")
    page.locator("#preset-picker option", has_text="Careful").wait_for(state="attached")
    page.click("#preset-default")
    page.locator("#preset-picker option", has_text="Careful (default)").wait_for(state="attached")
    page.goto("/")
    settings_shown()
    assert page.input_value("#model-picker") == "openai|gpt-4o"
    assert page.input_value("#system-prompt") == "Answer carefully."
    assert page.input_value("#param-temperature") == "0.3"
    # Picking "No preset" then the preset applies it again.
    page.fill("#system-prompt", "")
    page.select_option("#preset-picker", "")
    page.select_option("#preset-picker", label="Careful (default)")
    assert page.input_value("#system-prompt") == "Answer carefully."
    assert Preset.objects.get().is_default


@pytest.mark.django_db
def test_favourite_models_are_starred_and_listed_first(
    client: Client, alice: Any, bob: Any, prices: None, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-key-for-the-picker-0000000"
    client.force_login(alice)
    star = {"provider": "openai", "model": "gpt-4o-mini", "favourite": True}
    assert send(client, "post", "/api/models/favourites", star).json() == star
    assert send(client, "post", "/api/models/favourites", star).status_code == 200  # again: same
    models = {(m["provider"], m["model"]): m for m in client.get("/api/models").json()}
    assert models["openai", "gpt-4o-mini"]["favourite"] is True
    assert models["openai", "gpt-4o"]["favourite"] is False
    html = client.get("/").content.decode()
    group = html.split("data-favourites")[1].split("</optgroup>")[0]
    assert 'value="openai|gpt-4o-mini"' in group
    assert 'value="openai|gpt-4o"' not in group.replace('value="openai|gpt-4o-mini"', "")
    # Someone else's stars are their own.
    client.force_login(bob)
    assert client.get("/api/models").json()[0]["favourite"] is False
    assert "data-favourites hidden" in client.get("/").content.decode()
    client.force_login(alice)
    unstar = send(client, "post", "/api/models/favourites", {**star, "favourite": False})
    assert unstar.status_code == 200
    assert not FavouriteModel.objects.exists()
    bad = send(client, "post", "/api/models/favourites", {**star, "provider": "nope"})
    assert bad.status_code == 400
    assert (
        send(client, "post", "/api/models/favourites", {**star, "favourite": 1}).status_code == 400
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_person_finds_a_model_and_stars_it(
    asgi_page: Any, prices: None, size: dict[str, int]
) -> None:
    page = asgi_page
    page.set_viewport_size(size)
    sign_in(page, keyed_user("nia@example.com"))
    if size == PHONE:  # the settings fold away on a phone
        page.click("#settings-toggle")
    page.fill("#model-search", "4o mini")
    assert page.input_value("#model-picker") == "openai|gpt-4o-mini"
    visible = page.locator("#model-picker option:not([hidden])").all_inner_texts()
    assert visible
    assert all("mini" in text.lower() for text in visible)
    page.click("#model-favourite")
    page.locator("#model-favourite[aria-pressed=true]").wait_for()
    page.reload()
    starred = page.locator("#model-picker optgroup[data-favourites] option")
    assert starred.count() == 1
    assert starred.get_attribute("value") == "openai|gpt-4o-mini"
