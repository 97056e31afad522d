"""The site layout: navigation, CSP and security headers."""

import re
from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_navigation_for_a_signed_in_user(client: Client, alice: Any) -> None:
    client.force_login(alice)
    html = client.get("/").content.decode()
    for href in ['href="/"', 'href="/usage/"', 'href="/keys/"', 'action="/accounts/logout/"']:
        assert href in html
    assert 'href="/admin/"' not in html


@pytest.mark.django_db
def test_staff_see_the_admin_link(client: Client, staff: Any) -> None:
    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/").content.decode()


@pytest.mark.django_db
def test_every_page_sends_the_content_security_policy(client: Client, alice: Any) -> None:
    client.force_login(alice)
    for url in ["/", "/accounts/profile/", "/accounts/password/change/"]:
        csp = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'", url
        assert directives["img-src"] == "'self' data:"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        # The nonce is added only to pages that use one.
        assert directives["script-src"].split()[0] == "'self'"
        assert "'unsafe-inline'" not in csp


@pytest.mark.django_db
def test_pages_have_no_inline_scripts_without_the_nonce(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/")
    html = response.content.decode()
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or f'nonce="{response.context["csp_nonce"]}"' in tag, tag
    assert " style=" not in html


@pytest.mark.django_db
def test_security_headers(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_static_files_are_served(client: Client) -> None:
    response = client.get("/static/css/site.css")
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.django_db
@pytest.mark.anyio
async def test_static_files_are_served_under_asgi(async_client: Any) -> None:
    response = await async_client.get("/static/css/site.css")
    assert response.status_code == 200
