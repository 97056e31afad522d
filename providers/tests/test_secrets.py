"""A saved key never comes back out: not in logs, not in error reports."""

import json
import logging
import sys
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.views.debug import ExceptionReporter

from providers import api, views
from providers.models import ProviderKey

KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678abcd"


def broken_save(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("the database went away")


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", ["page", "api"])
def test_error_reports_never_contain_the_key(
    alice: Any, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setattr(ProviderKey, "save", broken_save)
    factory = RequestFactory()
    if endpoint == "page":
        request = factory.post("/keys/openai/", {"key": KEY})
        view: Any = views.key_save
    else:
        request = factory.put(
            "/api/keys/openai", json.dumps({"key": KEY}), content_type="application/json"
        )
        view = api.key_detail
    request.user = alice
    request.session = {}  # type: ignore[assignment]
    try:
        view(request, provider="openai")
    except RuntimeError:
        exc_type, exc_value, tb = sys.exc_info()
        report = ExceptionReporter(request, exc_type, exc_value, tb, is_email=True)
        text = report.get_traceback_text()
        html = report.get_traceback_html()
    else:
        pytest.fail("the view should have failed")
    assert "the database went away" in text
    assert KEY not in text
    assert KEY not in html


@pytest.mark.django_db(transaction=True)
def test_logs_never_contain_the_key(
    client: Client, alice: Any, mock_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(alice)
    with caplog.at_level(logging.DEBUG):
        client.put("/api/keys/openai", json.dumps({"key": KEY}), content_type="application/json")
        client.post("/api/keys/openai/test", content_type="application/json")
        mock_provider.configure(fault="500")
        client.post("/api/keys/openai/test", content_type="application/json")
        client.post("/keys/openai/", {"key": "sk-bad key with spaces"})
    assert caplog.records  # something was logged
    assert KEY not in caplog.text
    assert KEY[8:] not in caplog.text
