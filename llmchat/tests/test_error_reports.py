"""A key or a request body never shows in an error report: not on the DEBUG page,
not in the report of a logged error (what an error e-mail or tracker renders),
whatever failed after the key was read."""

import json
import logging
from typing import Any

import pytest
from django.test import Client
from django.views.debug import ExceptionReporter

import llmchat.api
from providers import keys, registry

SECRET = "sk-test-DO-NOT-SHOW-0123456789abcdef"


class Boom(Exception):
    pass


def explode(*args: Any, **kwargs: Any) -> Any:
    raise Boom("after the key was read")


async def aexplode(*args: Any, **kwargs: Any) -> Any:
    raise Boom("after the key was read")


@pytest.fixture
def client(alice: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


def reported(caplog: pytest.LogCaptureFixture) -> str:
    """The logged error's report, as Django's AdminEmailHandler renders it."""
    record = next(r for r in caplog.records if r.name == "django.request" and r.exc_info)
    exc_type, exc, tb = record.exc_info  # type: ignore[misc]
    assert exc_type is Boom, exc
    return ExceptionReporter(record.request, exc_type, exc, tb).get_traceback_html()  # type: ignore[attr-defined]


def put_key(client: Client) -> Any:
    return client.put(
        "/api/keys/openai", json.dumps({"key": SECRET}), content_type="application/json"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_saving_a_key_that_fails_downstream_reports_no_key(
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    settings.DEBUG = debug
    monkeypatch.setattr(keys, "mask", explode)  # called with the key
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = put_key(client)
    assert response.status_code == 500
    assert SECRET not in response.content.decode()
    report = reported(caplog)
    assert "provider_key_save" in report  # the frames are there
    assert SECRET not in report


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_a_failure_while_reading_the_body_reports_no_body(
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    settings.DEBUG = debug
    monkeypatch.setattr(llmchat.api, "_check_text", explode)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = put_key(client)
    assert response.status_code == 500
    report = reported(caplog)
    assert "read_json" in report
    assert SECRET not in report


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_testing_a_candidate_key_that_fails_downstream_reports_no_key(
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    settings.DEBUG = debug
    monkeypatch.setattr(registry.get("openai"), "check_key", aexplode)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.post(
            "/api/keys/openai/test", json.dumps({"key": SECRET}), content_type="application/json"
        )
    assert response.status_code == 500
    report = reported(caplog)
    assert "provider_key_test" in report
    assert SECRET not in report


@pytest.mark.django_db
def test_the_debug_page_of_the_keys_form_shows_no_key(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DEBUG = True
    monkeypatch.setattr(keys, "mask", explode)
    response = client.post("/keys/openai/", {"key": SECRET})
    assert response.status_code == 500
    page = response.content.decode()
    assert "provider_key_save" in page  # Django's DEBUG page
    assert SECRET not in page


@pytest.mark.parametrize("build", ["openai_client", "anthropic_client", "google_client"])
def test_an_sdk_client_that_cannot_be_built_reports_no_key(
    monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    import sys

    from providers import http
    from providers.base import Credentials

    monkeypatch.setattr(http, "http_client", explode)
    try:
        getattr(http, build)(Credentials(SECRET, "", "user"))
    except Boom:
        exc_type, exc, tb = sys.exc_info()
    html = ExceptionReporter(None, exc_type, exc, tb).get_traceback_html()
    assert "after the key was read" in html
    assert SECRET not in html
