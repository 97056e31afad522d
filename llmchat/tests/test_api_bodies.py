"""What the JSON endpoints do with a body they cannot use (llmchat.api.read_json
and id_field): a JSON 4xx naming the problem, never a 500, nothing saved."""

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, Message
from providers.models import ProviderKey

CSRF_TOKEN = "a" * 32
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def client(alice: Any) -> Client:
    """Alice, signed in, through the CSRF check as the browser passes it: a form
    body is parsed by that check before any view runs."""
    client = Client(enforce_csrf_checks=True, HTTP_X_CSRFTOKEN=CSRF_TOKEN)
    client.force_login(alice)
    client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_TOKEN
    return client


@pytest.fixture
def conversation(alice: Any) -> Conversation:
    return Conversation.objects.create(user=alice, title="Tokens", provider="demo", model="demo")


def endpoints(conversation: Conversation) -> Iterator[tuple[str, str]]:
    """Every endpoint that reads a JSON body, with its method."""
    yield "post", "/api/chat"
    yield "patch", f"/api/conversations/{conversation.pk}"
    yield "put", "/api/keys/openai"
    yield "post", "/api/keys/openai/test"


def send(client: Client, method: str, path: str, body: str | bytes, **kwargs: Any) -> Any:
    kwargs.setdefault("content_type", "application/json")
    return getattr(client, method)(path, body, **kwargs)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["message"]
    return error


def nothing_saved(conversation: Conversation) -> None:
    conversation.refresh_from_db()
    assert conversation.title == "Tokens"
    assert not Message.objects.exists()
    assert not ProviderKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        "[" * 12_000,
        '{"message": ' + "[" * 12_000,
        '{"message": ' + "[" * 5_000 + "]" * 5_000 + "}",  # parses; nests past MAX_DEPTH
        '{"key": {"a": ' * 100 + "1" + "}" * 200,
    ],
    ids=["array", "in-a-field", "parsed", "objects"],
)
def test_deep_nesting_is_a_400_invalid_json(
    client: Client, conversation: Conversation, body: str
) -> None:
    for method, path in endpoints(conversation):
        assert error_of(send(client, method, path, body), 400)["code"] == "invalid_json"
    nothing_saved(conversation)


@pytest.mark.django_db
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_javascript_constants_are_not_json(client: Client, constant: str) -> None:
    body = '{"provider": "demo", "model": "demo-echo", "message": "hi", "conversation": %s}'
    response = send(client, "post", "/api/chat", body % constant)
    assert error_of(response, 400)["code"] == "invalid_json"


LONE = "\\ud800"  # as a JSON escape: half of a UTF-16 pair


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "post",
            "/api/chat",
            {"provider": "demo", "model": "demo-echo", "message": LONE},
            "message",
        ),
        (
            "post",
            "/api/chat",
            {"provider": "demo", "model": "demo-echo", "message": "hi", "system_prompt": LONE},
            "system_prompt",
        ),
        (
            "post",
            "/api/chat",
            {"provider": "demo", "model": f"demo{LONE}", "message": "hi"},
            "model",
        ),
        ("patch", "/api/conversations/{pk}", {"title": f"A {LONE} title"}, "title"),
        ("patch", "/api/conversations/{pk}", {"title": "ok", "extra": [{"x": LONE}]}, "extra"),
        (
            "put",
            "/api/keys/compatible",
            {"key": "sk-local", "base_url": f"http://{LONE}/"},
            "base_url",
        ),
        ("put", "/api/keys/openai", {"key": f"sk-{LONE}-0123456789"}, "key"),
        ("post", "/api/keys/openai/test", {"key": f"sk-{LONE}-0123456789"}, "key"),
    ],
)
def test_a_lone_surrogate_anywhere_in_the_body_is_a_400(
    client: Client, conversation: Conversation, method: str, path: str, body: Any, field: str
) -> None:
    raw = json.dumps(body).replace("\\\\ud800", "\\ud800")  # the escape, unescaped once
    assert "\\ud800" in raw
    response = send(client, method, path.format(pk=conversation.pk), raw)
    error = error_of(response, 400)
    assert error["code"] == "invalid_text"
    assert error["field"] == field
    nothing_saved(conversation)


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_key_of_the_body_is_a_400_too(
    client: Client, conversation: Conversation
) -> None:
    response = send(client, "patch", f"/api/conversations/{conversation.pk}", '{"\\udc00": 1}')
    assert error_of(response, 400)["code"] == "invalid_text"
    # Raw UTF-8 bytes of a surrogate, which Python's JSON decoder lets through.
    raw = b'{"title": "\xed\xa0\x80"}'
    response = send(client, "patch", f"/api/conversations/{conversation.pk}", raw)
    assert error_of(response, 400)["code"] in ("invalid_text", "invalid_json")
    nothing_saved(conversation)


@pytest.mark.django_db
def test_a_surrogate_pair_is_one_character_and_welcome(
    client: Client, conversation: Conversation
) -> None:
    response = send(
        client, "patch", f"/api/conversations/{conversation.pk}", '{"title": "Hi \\ud83d\\ude00"}'
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "Hi \U0001f600"


@pytest.mark.django_db
@pytest.mark.parametrize("conversation_id", [2**63, 2**64 + 5, 10**30, 0, -1, -(2**63) - 1])
def test_a_conversation_id_outside_the_id_range_is_a_400_naming_the_field(
    client: Client, conversation_id: int
) -> None:
    body = {
        "conversation": conversation_id,
        "provider": "demo",
        "model": "demo-echo",
        "message": "hi",
    }
    response = send(client, "post", "/api/chat", json.dumps(body))
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == ("invalid", "conversation")
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_the_largest_id_is_an_id_that_is_not_there(client: Client) -> None:
    body = {"conversation": 2**63 - 1, "provider": "demo", "model": "demo-echo", "message": "hi"}
    response = send(client, "post", "/api/chat", json.dumps(body))
    assert error_of(response, 404)["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=BoUnDaRy",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
    ],
)
def test_a_body_that_is_not_json_is_a_415(
    client: Client, conversation: Conversation, content_type: str
) -> None:
    if content_type.startswith("multipart"):
        body = (
            '--BoUnDaRy\r\nContent-Disposition: form-data; name="message"\r\n\r\n'
            "hi\r\n--BoUnDaRy--\r\n"
        )
    else:
        body = "message=hi"
    for method, path in endpoints(conversation):
        response = send(client, method, path, body, content_type=content_type)
        assert error_of(response, 415)["code"] == "unsupported_media_type"
    nothing_saved(conversation)


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/api/chat", "--x\r\nbroken", "multipart/form-data", 400),  # no boundary
        ("/api/nope", "--x\r\nbroken", "multipart/form-data", 404),  # and no route
        ("/api/conversations/0", "{}", "multipart/form-data", 404),
        ("/api/chat", "&".join(f"f{n}=x" for n in range(5000)), FORM, 400),
        ("/api/chat", "message=" + "x" * 5000, FORM, 400),
    ],
    ids=["malformed", "no-route", "no-id", "too-many-fields", "too-large"],
)
def test_a_form_body_django_cannot_parse_is_a_json_4xx(
    client: Client,
    settings: Any,
    debug: bool,
    path: str,
    body: str,
    content_type: str,
    status: int,
) -> None:
    # Django parses a form body for the CSRF check, and again for its error pages.
    settings.DEBUG = debug
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    for headers in ({}, {"X-CSRFToken": ""}):  # with the token, and without
        response = client.generic("POST", path, body, content_type=content_type, headers=headers)
        assert error_of(response, status)["code"] in ("bad_request", "not_found")


@pytest.mark.django_db
def test_read_json_refuses_a_form_body_already_parsed_without_touching_the_body(
    alice: Any,
) -> None:
    from django.test import RequestFactory

    from llmchat.api import ApiError, read_json

    request = RequestFactory().post("/api/chat", {"message": "hi"})  # multipart
    assert request.POST["message"] == "hi"  # as the CSRF check reads it
    with pytest.raises(ApiError) as refused:
        read_json(request, max_bytes=1000)
    assert refused.value.status == 415


@pytest.mark.django_db
def test_a_json_body_over_the_endpoints_limit_is_a_413(
    client: Client, conversation: Conversation
) -> None:
    body = json.dumps({"title": "x" * 20_000})
    response = send(client, "patch", f"/api/conversations/{conversation.pk}", body)
    assert error_of(response, 413)["code"] == "too_large"
    nothing_saved(conversation)


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_over_the_upload_limit_is_a_json_413(
    asgi_live_server: Any, alice: Any, settings: Any
) -> None:
    # Sent without a Content-Length, through uvicorn: Django learns the size only
    # once the body is in, and refuses it past DATA_UPLOAD_MAX_MEMORY_SIZE.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    django_client = Client()
    django_client.force_login(alice)
    cookies = {
        settings.SESSION_COOKIE_NAME: django_client.cookies[settings.SESSION_COOKIE_NAME].value,
        settings.CSRF_COOKIE_NAME: CSRF_TOKEN,
    }
    body = json.dumps({"provider": "demo", "model": "demo-echo", "message": "x" * 30_000})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096].encode()

    with httpx2.Client(base_url=asgi_live_server.url, cookies=cookies, timeout=10) as http:
        response = http.post(
            "/api/chat",
            content=chunks(),
            headers={"Content-Type": "application/json", "X-CSRFToken": CSRF_TOKEN},
        )
    assert response.status_code == 413, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "too_large"
    assert not Message.objects.exists()


def test_the_chunked_test_sends_no_content_length() -> None:
    request = httpx2.Request("POST", "http://testserver/", content=iter([b"{}"]))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
