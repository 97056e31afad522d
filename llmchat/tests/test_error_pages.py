"""Error pages in production look like the site and lead back to it; the admin
has the site's icon and no two sections of one name."""

import re
from typing import Any

import pytest
from django.test import Client

from conversations import selectors


@pytest.mark.django_db
def test_a_missing_page_is_the_sites_own(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "This page does not exist" in html
    assert 'href="/"' in html  # back to the chat
    assert 'class="site-header"' in html
    assert 'rel="icon"' in html


@pytest.mark.django_db
def test_a_server_error_is_the_sites_own_page(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(user: Any) -> Any:
        raise RuntimeError("a secret detail of the bug")

    monkeypatch.setattr(selectors, "models_for_user", broken)
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong on our side" in html
    assert "secret detail" not in html
    assert 'rel="icon"' in html
    assert "/static/css/site.css" in html


@pytest.mark.django_db
def test_the_admin_has_the_icon_and_no_two_sections_share_a_name(
    client: Client, staff: Any
) -> None:
    client.force_login(staff)
    html = client.get("/admin/").content.decode()
    assert 'rel="icon"' in html
    sections = re.findall(r'<caption>\s*<a[^>]*class="section"[^>]*>([^<]+)</a>', html)
    assert "Users" in sections
    assert len(sections) == len(set(sections)), sections
