"""The chat page as a newcomer meets it, in Chromium on a laptop (1366x900) and on a
phone (390x844): layout, scrolling, Send and Stop, failed replies."""

from typing import Any

import pytest

from conftest import make_user
from conversations.models import Conversation, Message, Status, UsageRecord
from conversations.tests.test_browser import KEY, sign_in
from llmchat.tests.browser import asgi_page, screenshot

__all__ = ["asgi_page"]

LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def keyed_user(email: str) -> Any:
    from providers import keys

    user = make_user(email)
    keys.provider_key_save(user=user, provider="openai", key=KEY)
    return user


def long_conversation(user: Any, *, turns: int = 20, title: str = "A long talk") -> Conversation:
    conversation = Conversation.objects.create(
        user=user, title=title, provider="openai", model="gpt-4o"
    )
    for i in range(turns):
        Message.objects.create(conversation=conversation, role="user", content=f"Question {i}")
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"Answer {i}.\n\n" + "A line of the reply. " * 12,
            status=Status.COMPLETE,
            provider="openai",
            model="gpt-4o",
        )
    return conversation


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.locator(selector).last.bounding_box()
    assert found is not None, f"{selector} is not laid out"
    return dict(found)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_double_click_on_send_sends_once_and_does_not_stop_the_reply(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("dee@example.com"))
    mock_provider.configure(reply="One reply, to the end.", tokens_per_second=10)
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Hello")
    send = box(page, "#send-button")
    x, y = send["x"] + send["width"] / 2, send["y"] + send["height"] / 2
    page.mouse.click(x, y)
    page.locator(".message-assistant[data-id]").wait_for()
    # The second click of a double-click (a click whose count is 2, however long
    # the page took) lands where Send was: on Stop.
    page.mouse.move(x, y)
    page.mouse.down(click_count=2)
    page.mouse.up(click_count=2)
    page.locator(".message-assistant .meta-cost").wait_for()
    reply = Message.objects.get(role="assistant")
    assert reply.status == Status.COMPLETE
    assert Message.objects.filter(role="user").count() == 1
    assert page.url.endswith(f"/c/{reply.conversation_id}/")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_signed_in_message_is_a_row_above_the_chat_not_a_cell_of_it(
    asgi_page: Any,
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, make_user("flo@example.com"))
    page.locator(".flash-list").wait_for()
    sidebar, chat, flash = box(page, ".chat-sidebar"), box(page, ".chat-main"), box(page, ".flash")
    assert sidebar["width"] < 320
    assert chat["width"] > 900
    assert flash["y"] + flash["height"] <= chat["y"]
    assert abs(sidebar["y"] - chat["y"]) < 1


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_on_a_phone_nothing_is_wider_than_the_screen_and_the_list_is_a_drawer(
    asgi_page: Any,
) -> None:
    page = asgi_page
    page.set_viewport_size(PHONE)
    user = make_user("pia@example.com")
    conversation = long_conversation(user, turns=2, title="Unbroken" * 25)
    Message.objects.create(conversation=conversation, role="user", content="x" * 400)
    sign_in(page, user)
    page.goto(f"/c/{conversation.pk}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    send = box(page, "#send-button")
    assert send["x"] + send["width"] <= PHONE["width"]
    assert send["y"] + send["height"] <= PHONE["height"]
    # The settings fold away: the messages keep most of the screen.
    assert not page.locator("#model-picker").is_visible()
    assert box(page, "#messages")["height"] > PHONE["height"] / 2
    page.click("#settings-toggle")
    page.locator("#model-picker").wait_for(state="visible")
    page.click("#settings-toggle")
    page.locator("#model-picker").wait_for(state="hidden")
    # The conversations are a drawer, closed until asked for.
    assert not page.locator("#chat-sidebar").is_visible()
    page.click("#sidebar-toggle")
    page.locator("#chat-sidebar").wait_for(state="visible")
    assert page.locator("#conversation-list li.current").is_visible()
    page.wait_for_timeout(300)  # the drawer's slide
    screenshot(page, "chat-phone-drawer")
    page.keyboard.press("Escape")
    page.locator("#chat-sidebar").wait_for(state="hidden")
    screenshot(page, "chat-phone")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_conversation_opens_at_its_newest_message_and_the_composer_covers_no_reply(
    asgi_page: Any, mock_provider: Any, prices: None, size: dict[str, int]
) -> None:
    page = asgi_page
    page.set_viewport_size(size)
    user = keyed_user("ned@example.com")
    conversation = long_conversation(user)
    sign_in(page, user)
    page.goto(f"/c/{conversation.pk}/")
    newest, composer = box(page, ".message-assistant"), box(page, ".composer")
    assert newest["y"] >= 0
    assert newest["y"] + newest["height"] <= composer["y"] + 1

    mock_provider.configure(reply="The end of the reply, with its cost below.", input_tokens=50)
    page.fill("#message-input", "One more")
    page.keyboard.press("Enter")
    page.locator(".message-assistant.status-complete .meta-cost").last.wait_for()
    cost, composer = box(page, ".message-assistant .meta-cost"), box(page, ".composer")
    assert cost["y"] >= 0
    assert cost["y"] + cost["height"] <= composer["y"] + 1


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_failed_reply_keeps_its_explanation_and_offers_nothing_to_copy(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("eve@example.com"))
    mock_provider.configure(fault="400")
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Hello")
    page.keyboard.press("Enter")
    failed = page.locator(".message-assistant.status-error")
    failed.wait_for()
    explained = failed.locator(".message-error").inner_text()
    assert explained
    assert failed.locator("[data-action=copy]").count() == 0
    page.reload()
    failed = page.locator(".message-assistant.status-error")
    assert failed.locator(".message-error").inner_text() == explained
    assert failed.locator("[data-action=copy]").count() == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_costs_read_the_same_live_and_after_a_reload(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    from llmchat.money import dollars

    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("cy@example.com"))
    # gpt-4o: 100 in at $2.50 and 4 out at $10 per 1M = $0.00029 (0.000290 stored).
    mock_provider.configure(reply="One two three four", input_tokens=100, reply_tokens=4)
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Count")
    page.keyboard.press("Enter")
    page.locator(".message-assistant .meta-cost").wait_for()
    page.locator("#conversation-total strong").wait_for()

    def shown() -> list[str]:
        return [
            page.locator(".message-assistant .meta-cost").inner_text(),
            page.locator("#conversation-total strong").inner_text(),
            page.locator("#conversation-list li.current .conversation-cost").inner_text(),
        ]

    live = shown()
    reply = Message.objects.get(role="assistant")
    assert live == [dollars(reply.cost)] * 3
    page.reload()
    assert shown() == live


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_reply_is_formatted_while_it_streams_and_stays_sanitized(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("fay@example.com"))
    reply = 'A **bold** start <img src=x onerror="window.__xss = 1">, then ' + "words " * 40
    mock_provider.configure(reply=reply + "end.", tokens_per_second=15)  # about 3 s
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Format this")
    page.keyboard.press("Enter")
    streaming = page.locator(".message-assistant .message-body.streaming")
    streaming.locator("strong", has_text="bold").wait_for()
    # Formatted before the reply ended: it is still streaming.
    assert page.locator(".message-assistant .meta-cost").count() == 0
    assert streaming.locator("img").count() == 0
    page.locator(".message-assistant .meta-cost").wait_for()
    assert page.locator(".message-assistant strong", has_text="bold").count() == 1
    assert page.evaluate("window.__xss") is None
    raw = page.locator(".message-assistant .raw-content").evaluate("t => t.content.textContent")
    assert raw == Message.objects.get(role="assistant").content


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_code_blocks_have_their_language_and_a_copy_button(asgi_page: Any, settings: Any) -> None:
    settings.DEMO_TOKEN_DELAY = 0
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, make_user("gus@example.com"))
    page.select_option("#model-picker", "demo|demo-echo")
    page.fill("#message-input", "Show me code")
    page.keyboard.press("Enter")
    reply = page.locator(".message-assistant.status-complete")
    reply.wait_for()
    # The demo's reply quotes the question (text) and shows Python.
    assert reply.locator(".code-bar .code-lang").all_inner_texts() == ["text", "python"]
    reply.locator(".code-bar").last.get_by_role("button", name="Copy code").click()
    reply.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("def cost(")
    # A reload gives the same bars.
    page.reload()
    assert page.locator(".message-assistant .code-bar").count() == 2


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_keyboard_shortcuts_and_their_help(asgi_page: Any) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    user = make_user("ida@example.com")
    conversation = long_conversation(user, turns=1)
    sign_in(page, user)
    page.goto(f"/c/{conversation.pk}/")
    page.locator("body").click(position={"x": 5, "y": 200})
    page.keyboard.press("?")
    help_dialog = page.locator("#shortcuts")
    help_dialog.wait_for(state="visible")
    assert "New chat" in help_dialog.inner_text()
    page.keyboard.press("Escape")
    help_dialog.wait_for(state="hidden")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "message-input"
    page.keyboard.type("? stays in the box")
    assert not help_dialog.is_visible()
    assert page.input_value("#message-input") == "? stays in the box"
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(lambda url: "/c/" not in url)
    page.keyboard.press("Shift+Escape")
    assert page.evaluate("document.activeElement.id") == "message-input"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_escape_stops_the_reply_being_written(
    asgi_page: Any, mock_provider: Any, prices: None
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("jo@example.com"))
    mock_provider.configure(reply_tokens=300, tokens_per_second=15)
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "Go on and on")
    page.keyboard.press("Enter")
    page.locator(".message-assistant[data-id]").wait_for()
    page.locator("#stop-button:enabled").wait_for()
    page.keyboard.press("Escape")
    page.locator(".message-assistant.status-stopped").wait_for()
    assert Message.objects.get(role="assistant").status == Status.STOPPED


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pinning_and_archiving_from_the_chat_header(asgi_page: Any) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    user = make_user("kai@example.com")
    first = long_conversation(user, turns=1, title="First talk")
    long_conversation(user, turns=1, title="Second talk")
    sign_in(page, user)
    page.goto(f"/c/{first.pk}/")
    page.locator("#chat-actions").get_by_role("button", name="Pin").click()
    page.locator("#chat-actions").get_by_role("button", name="Unpin").wait_for()
    labels = page.locator("#conversation-list .group-label").all_inner_texts()
    assert labels[0].lower() == "pinned"
    pinned = page.locator("#conversation-list li").nth(1)
    assert "First talk" in pinned.inner_text()
    page.locator("#chat-actions").get_by_role("button", name="Archive").click()
    page.locator("#chat-actions").get_by_role("button", name="Unarchive").wait_for()
    assert page.locator(f"#conversation-list li[data-id='{first.pk}']").count() == 0
    assert page.locator(f"#archived-list li[data-id='{first.pk}']").is_visible()
    first.refresh_from_db()
    assert first.pinned
    assert first.archived


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_model_parameters_are_set_in_the_page_sent_and_shown_on_the_reply(
    asgi_page: Any, mock_provider: Any, prices: None, size: dict[str, int]
) -> None:
    page = asgi_page
    page.set_viewport_size(size)
    sign_in(page, keyed_user("lou@example.com"))
    mock_provider.configure(reply="Tuned reply.")
    if size == PHONE:  # the settings fold away on a phone
        page.click("#settings-toggle")
    page.select_option("#model-picker", "openai|gpt-4o")
    page.click("#parameters summary")
    page.fill("#param-temperature", "0.2")
    page.select_option("#param-reasoning-effort", "high")
    # OpenAI takes no thinking budget: the field is not offered.
    assert not page.locator("#param-thinking-budget").is_visible()
    page.fill("#message-input", "Tune it")
    page.keyboard.press("Enter")
    meta = page.locator(".message-assistant .meta-parameters")
    meta.wait_for()
    assert meta.inner_text() == "temp 0.2 effort high"
    sent = mock_provider.requests[-1].body
    assert sent["temperature"] == 0.2
    assert sent["reasoning"] == {"effort": "high"}
    page.locator(".message-assistant .meta-cost").wait_for()
    page.reload()
    if size == PHONE:
        page.click("#settings-toggle")
    assert page.input_value("#param-temperature") == "0.2"
    assert page.input_value("#param-reasoning-effort") == "high"
    assert (
        page.locator(".message-assistant .meta-parameters").inner_text() == "temp 0.2 effort high"
    )
    # A bad value is refused before anything is sent; the message stays in the box.
    page.fill("#param-temperature", "7")
    page.fill("#message-input", "Too hot")
    page.keyboard.press("Enter")
    page.locator("#banner", has_text="temperature").wait_for()
    assert page.input_value("#message-input") == "Too hot"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_next_messages_input_cost_is_estimated_as_the_user_types(
    asgi_page: Any, prices: None, mock_provider: Any
) -> None:
    page = asgi_page
    page.set_viewport_size(LAPTOP)
    sign_in(page, keyed_user("ned2@example.com"))
    mock_provider.configure(input_tokens=1000)  # OpenAI's count: 1,000 at $2.50 per million
    page.select_option("#model-picker", "openai|gpt-4o")
    page.fill("#message-input", "How much will this cost?")
    line = page.locator("#cost-estimate")
    line.wait_for()
    text = line.inner_text()
    assert "~1,000 input tokens (counted by the provider)" in text
    assert "$0.0025" in text
    assert not UsageRecord.objects.exists()  # an estimate is never recorded


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_list_is_grouped_by_the_readers_own_days(asgi_page: Any, asgi_live_server: Any) -> None:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    reader_zone = "Etc/GMT+12"  # UTC-12: its days start twelve hours after the server's

    def label(when: Any, zone: Any) -> str:
        age = (timezone.now().astimezone(zone).date() - when.astimezone(zone).date()).days
        return "Today" if age <= 0 else "Yesterday" if age == 1 else "Previous 7 days"

    now = timezone.now()
    # A moment that is "today" for the server and another day for the reader, or the
    # other way round.
    when = next(
        now - timedelta(hours=h)
        for h in range(1, 48)
        if label(now - timedelta(hours=h), ZoneInfo("UTC"))
        != label(now - timedelta(hours=h), ZoneInfo(reader_zone))
    )
    user = make_user("ora@example.com")
    conversation = long_conversation(user, turns=1, title="Across midnight")
    Conversation.objects.filter(pk=conversation.pk).update(updated=when)
    context = asgi_page.context.browser.new_context(
        base_url=asgi_live_server.url, timezone_id=reader_zone
    )
    page = context.new_page()
    sign_in(page, user)
    labels = page.locator("#conversation-list .group-label").all_inner_texts()
    assert [text.strip().lower() for text in labels] == [label(when, ZoneInfo(reader_zone)).lower()]
    context.close()
