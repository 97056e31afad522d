"""The users admin: spend this month, keys (masked), budgets, deactivation."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from conftest import make_user
from conversations.budgets import month_bounds
from conversations.models import UsageRecord
from providers.keys import provider_key_save

USERS = "/admin/accounts/user/"
PLAINTEXT_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


def spend(user: Any, cost: str, *, when: Any = None, unpriced: bool = False) -> None:
    UsageRecord.objects.create(
        user=user,
        user_email=user.email,
        provider="openai",
        model="gpt-4o",
        key_source="user",
        cost=None if unpriced else Decimal(cost),
        unpriced=unpriced,
        outcome="complete",
        created=when or timezone.now(),
    )


@pytest.fixture
def operator(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def row_of(html: str, email: str) -> str:
    """The changelist row of one user."""
    start = html.index(f">{email}</a>")
    return html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]


@pytest.mark.django_db
def test_the_list_shows_this_months_spend(operator: Client, alice: Any, bob: Any) -> None:
    spend(alice, "1.25")
    spend(alice, "0.004")
    spend(alice, "0", unpriced=True)
    start, _ = month_bounds()
    spend(alice, "100", when=start - timedelta(seconds=1))  # last month
    html = operator.get(USERS).content.decode()
    assert '<td class="field-month_spend">$1.254</td>' in row_of(html, "alice@example.com")
    assert '<td class="field-month_spend">$0.00</td>' in row_of(html, "bob@example.com")


@pytest.mark.django_db
def test_the_list_shows_keys_masked_never_in_plaintext(
    operator: Client, alice: Any, bob: Any
) -> None:
    provider_key_save(user=alice, provider="openai", key=PLAINTEXT_KEY)
    provider_key_save(user=alice, provider="anthropic", key="sk-ant-api03-secretsecretsecret9876")
    html = operator.get(USERS).content.decode()
    alice_row = row_of(html, "alice@example.com")
    assert "anthropic sk-ant-…9876, openai sk-proj-…WXYZ" in alice_row
    assert '<td class="field-keys">—</td>' in row_of(html, "bob@example.com")
    assert PLAINTEXT_KEY not in html
    assert "secretsecretsecret" not in html


@pytest.mark.django_db
def test_the_list_shows_each_users_budget(operator: Client, settings: Any) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "10"
    make_user("own@example.com")
    User.objects.filter(email="own@example.com").update(monthly_budget=Decimal("20"))
    make_user("default@example.com")
    make_user("unlimited@example.com")
    User.objects.filter(email="unlimited@example.com").update(unlimited_budget=True)

    html = operator.get(USERS).content.decode()
    assert '<td class="field-budget">$20.00</td>' in row_of(html, "own@example.com")
    assert '<td class="field-budget">default ($10)</td>' in row_of(html, "default@example.com")
    assert '<td class="field-budget">unlimited</td>' in row_of(html, "unlimited@example.com")

    settings.DEFAULT_MONTHLY_BUDGET = ""
    html = operator.get(USERS).content.decode()
    assert '<td class="field-budget">none</td>' in row_of(html, "default@example.com")
    assert '<td class="field-budget">$20.00</td>' in row_of(html, "own@example.com")


@pytest.mark.django_db
def test_the_list_query_count_does_not_grow_with_users(
    operator: Client, django_assert_max_num_queries: Any
) -> None:
    def add_users(n: int, start: int) -> None:
        for i in range(start, start + n):
            user = make_user(f"user{i}@example.com")
            provider_key_save(user=user, provider="openai", key=f"sk-test-{i:04d}abcdefghijkl")
            spend(user, "0.5")

    add_users(2, 0)
    with CaptureQueriesContext(connection) as few:
        assert operator.get(USERS).status_code == 200
    add_users(20, 100)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = operator.get(USERS).content.decode()
    assert html.count("sk-test-…") == 22
    assert html.count("$0.50") == 22


@pytest.mark.django_db
def test_operators_deactivate_selected_users(
    operator: Client, staff: Any, alice: Any, bob: Any
) -> None:
    carol = make_user("carol@example.com")
    response = operator.post(
        USERS,
        {"action": "deactivate_users", "_selected_action": [alice.pk, bob.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Deactivated 2 users."]
    assert list(User.objects.filter(is_active=False).order_by("email")) == [alice, bob]
    carol.refresh_from_db()
    assert carol.is_active


@pytest.mark.django_db
def test_operators_cannot_deactivate_themselves(operator: Client, staff: Any, alice: Any) -> None:
    response = operator.post(
        USERS,
        {"action": "deactivate_users", "_selected_action": [alice.pk, staff.pk]},
        follow=True,
    )
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == ["You cannot deactivate yourself.", "Deactivated 1 user."]
    staff.refresh_from_db()
    assert staff.is_active


@pytest.mark.django_db
def test_operators_edit_a_users_budget(operator: Client, alice: Any) -> None:
    url = f"{USERS}{alice.pk}/change/"
    page = operator.get(url).content.decode()
    assert 'name="monthly_budget"' in page
    assert 'name="unlimited_budget"' in page
    assert ">Budget</h2>" in page

    form = {
        "email": alice.email,
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "monthly_budget": "25.50",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = operator.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    alice.refresh_from_db()
    assert alice.monthly_budget == Decimal("25.50")
    assert alice.unlimited_budget is False

    response = operator.post(url, {**form, "monthly_budget": "", "unlimited_budget": "on"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.monthly_budget is None
    assert alice.unlimited_budget is True


@pytest.mark.django_db
def test_a_negative_budget_is_refused(operator: Client, alice: Any) -> None:
    response = operator.post(
        f"{USERS}{alice.pk}/change/",
        {"email": alice.email, "is_active": "on", "monthly_budget": "-1"},
    )
    assert response.status_code == 200
    assert "monthly_budget" in response.context["adminform"].form.errors


@pytest.mark.django_db
def test_the_user_page_summarises_this_months_usage(
    operator: Client, alice: Any, settings: Any
) -> None:
    settings.DEFAULT_MONTHLY_BUDGET = "10"
    spend(alice, "2.5")
    spend(alice, "0.5")
    spend(alice, "0", unpriced=True)
    html = operator.get(f"{USERS}{alice.pk}/change/").content.decode()
    assert "$3.00 of $10.00 (30%) · 3 requests (1 unpriced)" in html
    assert (
        'href="/admin/conversations/usagerecord/report/?user=alice%40example.com&amp;group=model"'
        in html
    )


@pytest.mark.django_db
def test_the_usage_summary_of_an_unlimited_user(operator: Client, alice: Any) -> None:
    alice.unlimited_budget = True
    alice.save()
    spend(alice, "1")
    html = operator.get(f"{USERS}{alice.pk}/change/").content.decode()
    assert "$1.00 (no limit) · 1 request ·" in html


@pytest.mark.django_db
def test_the_add_user_page_still_works(operator: Client) -> None:
    page = operator.get(f"{USERS}add/")
    assert page.status_code == 200
    assert "usage this month" not in page.content.decode()
