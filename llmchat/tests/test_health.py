from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client, override_settings

REDIS_DOWN = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        # Nothing listens on port 1: a real connection failure, not a mock.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


@pytest.mark.django_db
def test_it_reports_ok(client: Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_it_names_the_cache_when_the_cache_is_down(client: Client) -> None:
    with override_settings(CACHES=REDIS_DOWN):
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "cache": "error"}


@pytest.mark.django_db
def test_it_names_the_database_when_the_database_is_down(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "error", "cache": "ok"}


@pytest.mark.django_db
def test_it_answers_any_host_and_plain_http(client: Client) -> None:
    # Load balancers probe by IP over HTTP; neither ALLOWED_HOSTS nor the HTTPS
    # redirect may turn them away.
    with override_settings(ALLOWED_HOSTS=["chat.example.com"], SECURE_SSL_REDIRECT=True):
        response = client.get("/health", HTTP_HOST="10.1.2.3:8000")
        other = client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert other.status_code == 400


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_it_works_under_asgi(async_client: Any) -> None:
    response = await async_client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
