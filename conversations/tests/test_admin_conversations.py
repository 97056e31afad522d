"""Conversations in the operators' admin: metadata and counts for staff; what people
wrote (titles, system prompts, messages) only when ADMIN_CAN_READ_CHATS is on.
Off, no page of the admin shows or searches a title: a conversation is
"Conversation #<id>"."""

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.test import Client

from conversations.models import Conversation, Message, UsageRecord

TITLE = "Surprise party for Dana"
SECRET_TEXT = "my secret plan to visit the moon"
LIST = "/admin/conversations/conversation/"


@pytest.fixture
def operator(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


@pytest.fixture
def conversation(alice: Any) -> Conversation:
    conversation = Conversation.objects.create(
        user=alice,
        title=TITLE,
        provider="openai",
        model="gpt-4o",
        system_prompt="You are a very private assistant",
    )
    Message.objects.create(conversation=conversation, role="user", content=SECRET_TEXT)
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Pack a warm coat",
        html="<p>Pack a warm coat</p>",
        input_tokens=12,
        output_tokens=5,
        cost=Decimal("0.000250"),
    )
    UsageRecord.objects.create(
        user=alice,
        user_email=alice.email,
        conversation=conversation,
        message=reply,
        provider="openai",
        model="gpt-4o",
        key_source="user",
        cost=Decimal("0.000250"),
        outcome="complete",
    )
    return conversation


@pytest.fixture
def metadata_only(settings: Any) -> None:
    del settings.ADMIN_CAN_READ_CHATS  # read with a default of False


@pytest.fixture
def chats_readable(settings: Any) -> None:
    settings.ADMIN_CAN_READ_CHATS = True


def page(client: Client, url: str, **params: Any) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, url
    return response.content.decode()


def no_content(html: str) -> bool:
    return all(
        text not in html
        for text in (TITLE, "Surprise", SECRET_TEXT, "Pack a warm coat", "very private assistant")
    )


def url_of(conversation: Conversation, view: str) -> str:
    return f"{LIST}{conversation.pk}/{view}/"


# --- Metadata only (the default) -----------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_a_number_counts_and_cost_but_no_title(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    html = page(operator, LIST)
    assert no_content(html)
    assert f"Conversation #{conversation.pk}" in html
    assert "alice@example.com" in html
    assert '<td class="field-message_count">2</td>' in html
    assert "$0.00025" in html


@pytest.mark.django_db
def test_the_change_page_shows_metadata_and_no_title(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    html = page(operator, url_of(conversation, "change"))
    assert no_content(html)  # the page's title and breadcrumbs included
    assert f"<title>Conversation #{conversation.pk} |" in html
    assert "$0.00025" in html
    assert "messages-group" not in html


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["Surprise", "Dana", "moon", "private"])
def test_the_search_finds_nothing_by_what_people_wrote(
    operator: Client, conversation: Conversation, metadata_only: None, query: str
) -> None:
    response = operator.get(LIST, {"q": query})
    assert response.context["cl"].result_count == 0
    assert operator.get(LIST, {"q": "alice"}).context["cl"].result_count == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "lookup",
    ["title__startswith", "title__icontains", "title", "system_prompt__icontains"],
)
def test_the_list_url_cannot_filter_on_what_people_wrote(
    operator: Client, conversation: Conversation, metadata_only: None, lookup: str
) -> None:
    # Otherwise ?title__startswith=S, Su, Sur... reads a title one letter at a time.
    assert operator.get(LIST, {lookup: "S"}).status_code == 400
    assert operator.get(LIST, {"provider": "openai"}).status_code == 200


@pytest.mark.django_db
def test_the_ledger_names_the_conversation_by_number_and_cannot_filter_on_its_title(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    ledger = "/admin/conversations/usagerecord/"
    assert no_content(page(operator, ledger))
    record = UsageRecord.objects.get()
    html = page(operator, f"{ledger}{record.pk}/change/")
    assert no_content(html)
    assert f'<a href="{url_of(conversation, "change")}">Conversation #{conversation.pk}</a>' in (
        html
    )
    assert operator.get(ledger, {"conversation__title__startswith": "S"}).status_code == 400


@pytest.mark.django_db
def test_deleting_one_shows_no_title_before_or_after_nor_in_the_log(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    html = page(operator, url_of(conversation, "delete"))
    assert no_content(html)
    assert f"Conversation #{conversation.pk}" in html
    assert "<li>Messages: 2</li>" in html

    done = operator.post(url_of(conversation, "delete"), {"post": "yes"}, follow=True)
    assert done.status_code == 200
    assert no_content(done.content.decode())  # the "was deleted" message
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert entry.object_repr == f"Conversation #{conversation.pk}"
    assert no_content(page(operator, "/admin/"))  # its recent actions


@pytest.mark.django_db
def test_deleting_several_shows_no_title_nor_logs_one(
    operator: Client, conversation: Conversation, alice: Any, metadata_only: None
) -> None:
    other = Conversation.objects.create(
        user=alice, title="Surprise, part two", provider="openai", model="gpt-4o"
    )
    action = {"action": "delete_selected", "_selected_action": [conversation.pk, other.pk]}
    confirm = operator.post(LIST, action)
    assert confirm.status_code == 200
    assert no_content(confirm.content.decode())
    assert f"Conversation #{other.pk}" in confirm.content.decode()

    done = operator.post(LIST, {**action, "post": "yes"}, follow=True)
    assert no_content(done.content.decode())
    assert not Conversation.objects.exists()
    assert sorted(LogEntry.objects.values_list("object_repr", flat=True)) == sorted(
        [f"Conversation #{conversation.pk}", f"Conversation #{other.pk}"]
    )


@pytest.mark.django_db
def test_the_history_page_shows_no_title(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    assert no_content(page(operator, url_of(conversation, "history")))


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["usagerecord", "message"])
def test_no_picker_lists_conversations_by_title(
    operator: Client, conversation: Conversation, metadata_only: None, source: str
) -> None:
    # Django's autocomplete answers for any foreign key to a registered model.
    params = {"app_label": "conversations", "model_name": source, "field_name": "conversation"}
    for term in ("Surp", ""):  # a word of the title; everything
        response = operator.get("/admin/autocomplete/", {**params, "term": term})
        assert no_content(response.content.decode())


@pytest.mark.django_db
def test_a_conversation_never_reached_stays_unchanged(
    operator: Client, conversation: Conversation, metadata_only: None
) -> None:
    # Showing a conversation without its title changes nothing in it.
    page(operator, LIST)
    page(operator, url_of(conversation, "change"))
    page(operator, url_of(conversation, "delete"))
    conversation.refresh_from_db()
    assert conversation.title == TITLE


@pytest.mark.django_db
def test_deleting_a_user_lists_their_conversations_without_titles(
    operator: Client, conversation: Conversation, alice: Any, metadata_only: None
) -> None:
    assert no_content(page(operator, f"/admin/accounts/user/{alice.pk}/delete/"))


# --- When the site lets staff read chats -----------------------------------------


@pytest.mark.django_db
def test_staff_read_titles_and_messages_when_the_site_allows_it(
    operator: Client, conversation: Conversation, settings: Any, chats_readable: None
) -> None:
    assert TITLE in page(operator, LIST)
    text = page(operator, url_of(conversation, "change"))
    assert TITLE in text
    assert SECRET_TEXT in text
    assert "Pack a warm coat" in text
    assert "12 in / 5 out" in text
    assert "very private assistant" in text
    record = UsageRecord.objects.get()
    assert TITLE in page(operator, f"/admin/conversations/usagerecord/{record.pk}/change/")
    assert operator.get(LIST, {"q": "Surprise"}).context["cl"].result_count == 1
    assert operator.get(LIST, {"title__startswith": "S"}).context["cl"].result_count == 1

    settings.ADMIN_CAN_READ_CHATS = False  # read at request time
    assert no_content(page(operator, url_of(conversation, "change")))


@pytest.mark.django_db
def test_the_log_keeps_no_title_even_when_titles_may_be_read(
    operator: Client, conversation: Conversation, settings: Any, chats_readable: None
) -> None:
    # The log outlives the setting: turned off later, the index still lists it.
    operator.post(url_of(conversation, "delete"), {"post": "yes"}, follow=True)
    assert LogEntry.objects.get().object_repr == f"Conversation #{conversation.pk}"
    settings.ADMIN_CAN_READ_CHATS = False
    assert no_content(page(operator, "/admin/"))


# --- Either way ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_search_does_not_look_into_messages(
    operator: Client, conversation: Conversation, chats_readable: None
) -> None:
    response = operator.get(LIST, {"q": "moon"})
    assert response.context["cl"].result_count == 0


@pytest.mark.django_db
def test_conversations_are_read_only_but_can_be_deleted(
    operator: Client, conversation: Conversation
) -> None:
    change_url = url_of(conversation, "change")
    assert operator.post(change_url, {"title": "Renamed"}).status_code == 403
    assert operator.get(f"{LIST}add/").status_code == 403

    confirm = operator.get(url_of(conversation, "delete"))
    assert confirm.status_code == 200
    assert SECRET_TEXT not in confirm.content.decode()
    response = operator.post(url_of(conversation, "delete"), {"post": "yes"})
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    # The ledger keeps the call.
    assert UsageRecord.objects.get().conversation is None
