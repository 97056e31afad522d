import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from conversations.markdown import pygments_css
from conversations.models import Conversation, Message, UsageRecord
from llmchat.tests.test_settings import BASE_DIR


def conversation_with(user: Any, n: int) -> Conversation:
    conversation = Conversation.objects.create(
        user=user, title="Long", provider="demo", model="demo-echo"
    )
    for i in range(n):
        Message.objects.create(conversation=conversation, role="user", content=f"question {i}")
        reply = Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"answer {i}",
            html=f"<p>answer {i}</p>",
            provider="demo",
            model="demo-echo",
            key_source="none",
            cost=Decimal("0.000001"),
        )
        UsageRecord.objects.create(
            user=user,
            user_email=user.email,
            conversation=conversation,
            message=reply,
            provider="demo",
            model="demo-echo",
            key_source="none",
            cost=Decimal("0.000001"),
            outcome="complete",
        )
    return conversation


@pytest.mark.django_db
def test_the_chat_page(client: Client, alice: Any, prices: None) -> None:
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="model-picker"' in html
    assert "Offline demo" in html
    assert "/static/js/chat.js" in html
    assert "(add a key)" in html  # models without a key are shown, disabled


@pytest.mark.django_db
def test_a_conversation_page_shows_messages_tokens_cost_and_total(
    client: Client, alice: Any, prices: None
) -> None:
    conversation = conversation_with(alice, 3)
    client.force_login(alice)
    html = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "<p>answer 2</p>" in html
    assert "question 0" in html
    assert "Conversation total: <strong>$0.000003</strong>" in html
    assert "$0.000001" in html


@pytest.mark.django_db
def test_the_conversation_page_does_a_constant_number_of_queries(
    client: Client, alice: Any, prices: None, django_assert_max_num_queries: Any
) -> None:
    small = conversation_with(alice, 2)
    large = conversation_with(alice, 150)
    client.force_login(alice)
    client.get(f"/c/{small.pk}/")  # warm the session
    with django_assert_max_num_queries(15) as small_queries:
        client.get(f"/c/{small.pk}/")
    with django_assert_max_num_queries(len(small_queries.captured_queries)):
        response = client.get(f"/c/{large.pk}/")
    assert response.content.decode().count('class="message message-assistant') == 150


@pytest.mark.django_db
def test_model_output_in_the_page_is_the_sanitized_html(
    client: Client, alice: Any, prices: None
) -> None:
    conversation = Conversation.objects.create(user=alice, provider="demo", model="demo-echo")
    Message.objects.create(
        conversation=conversation, role="user", content="<script>alert('user')</script>"
    )
    client.force_login(alice)
    html = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "<script>alert('user')</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.django_db
def test_the_usage_page(client: Client, alice: Any) -> None:
    conversation_with(alice, 2)
    client.force_login(alice)
    html = client.get("/usage/").content.decode()
    assert '<strong id="usage-total">$0.000002</strong>' in html
    assert "demo/demo-echo" in html
    assert '<svg class="usage-chart"' in html


def test_the_highlight_stylesheet_matches_pygments() -> None:
    css = (BASE_DIR / "static" / "css" / "highlight.css").read_text()
    assert css.split("\n", 1)[1] == pygments_css()


@pytest.mark.django_db
def test_the_usage_chart_has_every_day_a_scale_and_day_numbers(client: Client, alice: Any) -> None:
    from django.utils import timezone

    conversation_with(alice, 2)
    client.force_login(alice)
    html = client.get("/usage/").content.decode()
    chart = re.search(r'<svg class="usage-chart".*?</svg>', html, re.S)
    assert chart is not None
    svg = chart.group(0)
    today = timezone.now().date()
    assert svg.count("<rect ") == today.day  # the 1st to today, spent or not
    scale = re.findall(r'class="chart-scale"[^>]*>([^<]+)<', svg)
    assert scale == ["$0.000002", "$0.00"]  # today's two calls are the peak
    days = re.findall(r'class="chart-day"[^>]*>(\d+)<', svg)
    assert days[0] == "1"
    assert days[-1] == str(today.day)
    assert f"{today:%b} {today.day}: $0.000002" in svg


@pytest.mark.django_db
def test_a_month_of_free_calls_says_so_instead_of_an_empty_chart(
    client: Client, alice: Any
) -> None:
    conversation_with(alice, 1)
    UsageRecord.objects.update(cost=Decimal(0))
    client.force_login(alice)
    html = client.get("/usage/").content.decode()
    assert "<svg" not in html
    assert "every call so far was free" in html


@pytest.mark.django_db
def test_the_sidebar_groups_conversations_by_day_pinned_first_archived_apart(
    client: Client, alice: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    ages = {"today": 0, "yesterday": 1, "week": 5, "old": 40, "pinned-old": 60, "archived": 0}
    made = {}
    for title, days in ages.items():
        made[title] = Conversation.objects.create(
            user=alice,
            title=title,
            provider="demo",
            model="demo-echo",
            updated=now - timedelta(days=days),
            pinned=title == "pinned-old",
            archived=title == "archived",
        )
    client.force_login(alice)
    html = client.get("/").content.decode()
    main = html.split('id="conversation-list"')[1].split("</ul>")[0]
    order = re.findall(
        r"group-label[^>]*>([^<]+)<|conversation-title[^>]*>(?:<span[^>]*>[^<]*</span> )?([^<]+)<",
        main,
    )
    shown = [label or title for label, title in order]
    assert shown == [
        "Pinned", "pinned-old",
        "Today", "today",
        "Yesterday", "yesterday",
        "Previous 7 days", "week",
        "Older", "old",
    ]  # fmt: skip
    archive = html.split('id="archived-list"')[1].split("</ul>")[0]
    assert ">archived<" in archive
    assert "Archived (1)" in html
