from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_chat_page_is_the_home_page(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert b"<h1>Chat</h1>" in response.content


@pytest.mark.django_db
def test_the_usage_page_renders(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/usage/")
    assert response.status_code == 200
    assert b"<h1>Usage</h1>" in response.content
