"""How the JSON API answers errors: always JSON under /api/, whatever answered
(an unknown route, Django itself, an uncaught exception, with DEBUG on or off),
and a 503 when the server itself is short of something."""

import json
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError
from django.test import Client, RequestFactory

from conversations import selectors
from llmchat import api
from llmchat.api import api_view
from llmchat.middleware import RequestLogMiddleware

BIG = 2**63  # one past the largest id


def json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = json.loads(response.content)["error"]
    assert error["code"]
    assert error["message"]
    return error


@pytest.fixture
def signed_in(alice: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/nope"),
        ("post", "/api/nope"),
        ("get", "/api/"),
        ("get", "/api/models/"),  # no trailing slashes under /api/
        ("delete", "/api/conversations/abc"),
        ("get", "/api/keys/openai/test/more"),
    ],
)
def test_an_unknown_api_route_is_a_json_404(
    signed_in: Client, settings: Any, debug: bool, method: str, path: str
) -> None:
    settings.DEBUG = debug
    response = getattr(signed_in, method)(path, content_type="application/json")
    assert json_error(response, 404)["code"] == "not_found"


@pytest.mark.django_db
def test_pages_outside_the_api_keep_their_html_errors(signed_in: Client) -> None:
    response = signed_in.get("/nope/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_an_uncaught_exception_is_a_json_500(
    signed_in: Client, settings: Any, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    settings.DEBUG = debug

    def broken(user: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "models_for_user", broken)
    response = signed_in.get("/api/models", HTTP_X_REQUEST_ID="req-id-0001")
    assert json_error(response, 500)["code"] == "server_error"
    assert b"a bug" not in response.content
    assert response["X-Request-ID"] == "req-id-0001"  # the other middleware's headers stay


@pytest.mark.django_db
def test_an_uncaught_exception_outside_the_api_keeps_djangos_page(
    signed_in: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(user: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "models_for_user", broken)
    response = signed_in.get("/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_djangos_own_400_for_a_host_it_does_not_serve_is_json(
    signed_in: Client, settings: Any, debug: bool
) -> None:
    settings.DEBUG = debug
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    response = signed_in.get("/api/models", HTTP_HOST="evil.example.net")
    assert json_error(response, 400)["code"] == "bad_request"


@pytest.mark.django_db
def test_djangos_400_for_a_bad_host_is_json_even_with_a_form_body_it_cannot_parse(
    alice: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    client = Client(enforce_csrf_checks=True)  # Django's 400 page checks the token
    client.force_login(alice)
    client.cookies[settings.CSRF_COOKIE_NAME] = "c" * 32
    response = client.generic(
        "POST", "/api/chat", "--x\r\nbroken", "multipart/form-data", HTTP_HOST="evil.example.net"
    )
    assert json_error(response, 400)["code"] == "bad_request"


@pytest.mark.parametrize(
    ("handler", "status"),
    [
        (api.bad_request, 400),
        (api.permission_denied, 403),
        (api.page_not_found, 404),
        (api.server_error, 500),
    ],
)
def test_djangos_error_handlers_answer_json_under_the_api_without_reading_the_body(
    handler: Any, status: int
) -> None:
    factory = RequestFactory()
    request = factory.post("/api/chat", "--x\r\nbroken", content_type="multipart/form-data")
    args = (request,) if status == 500 else (request, Exception("refused"))
    assert json_error(handler(*args), status)["code"]
    page = factory.get("/usage/")
    args = (page,) if status == 500 else (page, Exception("refused"))
    assert handler(*args)["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_a_csrf_failure_is_json(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/chat", "{}", content_type="application/json")
    assert json_error(response, 403)["code"] == "csrf_failed"


@pytest.mark.django_db
def test_a_failure_outside_the_json_errors_middleware_is_a_json_500_too(
    signed_in: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("the request log failed")

    monkeypatch.setattr(RequestLogMiddleware, "_start", broken)
    assert json_error(signed_in.get("/api/models"), 500)["code"] == "server_error"
    response = signed_in.get("/usage/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize(
    "pk",
    [BIG, 2**64, 10**40, "9" * 5000, 0, "00000000000000000000001"],
    ids=["2**63", "2**64", "10**40", "5000 digits", "0", "20 digits"],
)
def test_an_id_outside_the_id_range_in_the_path_is_a_json_404(
    signed_in: Client, method: str, pk: Any
) -> None:
    body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
    response = getattr(signed_in, method)(f"/api/conversations/{pk}", **body)
    assert json_error(response, 404)["code"] == "not_found"
    if method == "get":
        response = signed_in.get(f"/api/conversations/{pk}/export")
        assert json_error(response, 404)["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("pk", [BIG, 10**40, 0])
def test_an_id_outside_the_id_range_in_a_page_path_is_a_404(signed_in: Client, pk: int) -> None:
    assert signed_in.get(f"/c/{pk}/").status_code == 404


@pytest.mark.django_db
def test_the_largest_id_is_looked_up(signed_in: Client) -> None:
    assert json_error(signed_in.get(f"/api/conversations/{BIG - 1}"), 404)
    assert signed_in.get(f"/c/{BIG - 1}/").status_code == 404


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
