"""How the JSON API answers when the server itself is short of something."""

import json
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError
from django.test import RequestFactory

from llmchat.api import api_view


def _exhausted_pool() -> OperationalError:
    from psycopg_pool import PoolTimeout

    try:
        try:
            raise PoolTimeout("couldn't get a connection after 10.00 sec")
        except PoolTimeout as cause:
            raise OperationalError(str(cause)) from cause
    except OperationalError as exc:
        return exc


@pytest.mark.django_db
def test_an_exhausted_database_pool_is_a_503_to_retry_not_a_500(alice: Any) -> None:
    @api_view(["GET"])
    def busy(request: Any) -> Any:
        raise _exhausted_pool()

    request = RequestFactory().get("/api/x")
    request.user = alice
    response = busy(request)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert json.loads(response.content)["error"]["code"] == "overloaded"


@pytest.mark.django_db
def test_other_database_errors_are_not_hidden(alice: Any) -> None:
    @api_view(["GET"])
    def broken(request: Any) -> Any:
        raise OperationalError("disk full")

    request = RequestFactory().get("/api/x")
    request.user = alice
    with pytest.raises(OperationalError):
        broken(request)


@pytest.mark.django_db(transaction=True)
@pytest.mark.anyio
async def test_an_async_view_answers_an_exhausted_pool_with_503_too(alice: Any) -> None:
    @api_view(["GET"])
    async def busy(request: Any) -> Any:
        raise _exhausted_pool()

    request = RequestFactory().get("/api/x")
    request.user = alice
    request.session = SessionStore()  # what get_user() reads: alice, signed in
    request.session.update(
        {
            "_auth_user_id": str(alice.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": alice.get_session_auth_hash(),
        }
    )
    response = await busy(request)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
