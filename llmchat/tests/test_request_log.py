import json
import logging
from typing import Any

import pytest
from django.test import Client

from llmchat.logging import JsonFormatter, RequestIdFilter


@pytest.mark.django_db
def test_each_request_gets_an_id_and_one_log_line(
    client: Client, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(alice)
    with caplog.at_level(logging.INFO, logger="llmchat.request"):
        response = client.get("/usage/")
    rid = response["X-Request-ID"]
    assert len(rid) == 32
    lines = [r for r in caplog.records if r.name == "llmchat.request"]
    assert len(lines) == 1
    line = lines[0]
    assert line.status == 200  # type: ignore[attr-defined]
    assert line.path == "/usage/"  # type: ignore[attr-defined]
    assert line.user_id == alice.pk  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_a_proxys_request_id_is_kept_when_well_formed(client: Client) -> None:
    kept = client.get("/health", HTTP_X_REQUEST_ID="edge-1234abcd")
    assert kept["X-Request-ID"] == "edge-1234abcd"
    forged = client.get("/health", HTTP_X_REQUEST_ID='x" injected\nlevel=ERROR')
    assert forged["X-Request-ID"] != 'x" injected\nlevel=ERROR'
    assert len(forged["X-Request-ID"]) == 32


def test_the_json_formatter_writes_one_parseable_line() -> None:
    record = logging.LogRecord(
        "llmchat.request", logging.INFO, __file__, 1, "GET %s", ("/x\ny",), None
    )
    record.status = 200
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "GET /x\ny"
    assert entry["status"] == 200
    assert entry["level"] == "INFO"
    assert entry["request_id"] == "-"
