from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_keys_page_renders(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/keys/")
    assert response.status_code == 200
    assert b"<h1>API keys</h1>" in response.content
