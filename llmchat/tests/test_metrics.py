"""Prometheus metrics: what is counted, and who may read /metrics.

Metric values are process-global (prometheus_client's default registry), so each
test reads a value before and after and asserts on the difference, and uses
label values of its own.
"""

import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

from llmchat import metrics
from llmchat.tests.test_serving import free_port, get
from llmchat.tests.test_settings import BASE_DIR, PRODUCTION

TOKEN = "scrape-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def turn(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-test",
        "outcome": "complete",
        "input_tokens": 120,
        "cached_tokens": 100,
        "cache_write_tokens": 0,
        "output_tokens": 30,
        "reasoning_tokens": 7,
        "cost": Decimal("0.001250"),
        "ttft_ms": 450,
        "latency_ms": 2300,
        "error_code": "",
    }
    return {**base, **overrides}


def unique_model() -> str:
    return f"model-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    return TOKEN


# --- Access -----------------------------------------------------------------------


def test_it_is_off_when_nothing_is_configured(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 404
    assert b"llmchat_" not in response.content


def test_it_refuses_a_scrape_without_a_token(client: Client, token: str) -> None:
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert TOKEN.encode() not in response.content
    assert b"llmchat_" not in response.content


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
    ],
)
def test_it_refuses_a_wrong_token(client: Client, token: str, header: str) -> None:
    response = client.get("/metrics", HTTP_AUTHORIZATION=header)
    assert response.status_code == 403
    assert TOKEN.encode() not in response.content


def test_an_empty_token_setting_never_matches(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["192.0.2.1"]
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer").status_code == 403


def test_the_right_token_gets_the_metrics(client: Client, token: str) -> None:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert response["Cache-Control"] == "no-store"
    assert b"# TYPE llmchat_chat_turns_total counter" in response.content


def test_the_scheme_is_case_insensitive(client: Client, token: str) -> None:
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200


@pytest.mark.parametrize(
    ("allowed", "remote", "status"),
    [
        (["127.0.0.1"], "127.0.0.1", 200),
        (["10.0.0.0/8"], "10.20.30.40", 200),
        ([" 192.0.2.7 ", "10.0.0.0/8"], "192.0.2.7", 200),
        (["2001:db8::/32"], "2001:db8::5", 200),
        (["10.0.0.0/8"], "::ffff:10.1.1.1", 200),  # IPv4 over a dual-stack socket
        (["10.0.0.0/8"], "11.0.0.1", 403),
        (["127.0.0.1"], "127.0.0.2", 403),
        (["not-an-ip", "10.0.0.0/8"], "10.0.0.1", 200),  # a bad entry is skipped
        (["10.0.0.0/8"], "", 403),
        (["10.0.0.0/8"], "garbage", 403),
    ],
)
def test_allowed_ips_and_networks(
    client: Client, settings: Any, allowed: list[str], remote: str, status: int
) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = allowed
    response = client.get("/metrics", REMOTE_ADDR=remote)
    assert response.status_code == status
    if status == 200:
        assert response["Content-Type"] == CONTENT_TYPE_LATEST


def test_the_test_clients_address_is_allowed_when_listed(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = ["127.0.0.0/8"]
    assert client.get("/metrics").status_code == 200  # no token needed
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers=AUTH).status_code == 200  # the token still works


def test_it_answers_any_host_and_plain_http(client: Client, token: str, settings: Any) -> None:
    # Prometheus scrapes by IP over HTTP; neither ALLOWED_HOSTS nor the HTTPS
    # redirect may turn it away.
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/metrics", HTTP_HOST="10.0.0.9:8000", headers=AUTH)
    assert response.status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.0.0.9:8000").status_code == 403


def test_only_get_and_head(client: Client, token: str) -> None:
    assert client.post("/metrics", headers=AUTH).status_code == 405
    head = client.head("/metrics", headers=AUTH)
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.anyio
async def test_it_works_under_asgi(async_client: Any, token: str) -> None:
    response = await async_client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert b"llmchat_http_requests_total" in response.content
    refused = await async_client.get("/metrics")
    assert refused.status_code == 403


# --- What is counted ---------------------------------------------------------------


def test_requests_are_counted_by_method_and_status(client: Client, token: str) -> None:
    before = value("llmchat_http_requests_total", method="GET", status="403")
    before_count = value("llmchat_http_request_duration_seconds_count", method="GET")
    client.get("/metrics")  # refused: 403
    response = client.get("/metrics", headers=AUTH)
    assert value("llmchat_http_requests_total", method="GET", status="403") == before + 1
    # The scrape itself is counted once it has been answered.
    assert value("llmchat_http_request_duration_seconds_count", method="GET") == before_count + 2
    body = response.content.decode()
    assert 'llmchat_http_requests_total{method="GET",status="403"}' in body
    assert "path=" not in body


def test_an_odd_method_is_labelled_other(client: Client, token: str) -> None:
    before = value("llmchat_http_requests_total", method="other", status="403")
    client.generic("BREW", "/metrics")
    assert value("llmchat_http_requests_total", method="other", status="403") == before + 1


def test_a_chat_turn_is_counted(client: Client, token: str) -> None:
    model = unique_model()
    labels = {"provider": "openai", "model": model}
    ttft_before = value("llmchat_chat_time_to_first_token_seconds_count", provider="openai")
    ttft_sum = value("llmchat_chat_time_to_first_token_seconds_sum", provider="openai")
    duration_before = value("llmchat_chat_duration_seconds_count", provider="openai")
    duration_sum = value("llmchat_chat_duration_seconds_sum", provider="openai")

    metrics.record_chat_turn(**turn(model=model))
    metrics.record_chat_turn(**turn(model=model, cost=Decimal("0.000750")))

    assert value("llmchat_chat_turns_total", **labels, outcome="complete") == 2
    assert value("llmchat_tokens_total", **labels, kind="input") == 240
    assert value("llmchat_tokens_total", **labels, kind="cached") == 200
    assert value("llmchat_tokens_total", **labels, kind="output") == 60
    assert value("llmchat_tokens_total", **labels, kind="reasoning") == 14
    assert value("llmchat_tokens_total", **labels, kind="cache_write") == 0
    assert value("llmchat_cost_usd_total", **labels) == pytest.approx(0.002)
    assert value("llmchat_unpriced_calls_total", **labels) == 0
    assert (
        value("llmchat_chat_time_to_first_token_seconds_count", provider="openai")
        == ttft_before + 2
    )
    assert value(
        "llmchat_chat_time_to_first_token_seconds_sum", provider="openai"
    ) == pytest.approx(ttft_sum + 0.9)
    assert value("llmchat_chat_duration_seconds_count", provider="openai") == duration_before + 2
    assert value("llmchat_chat_duration_seconds_sum", provider="openai") == pytest.approx(
        duration_sum + 4.6
    )

    body = client.get("/metrics", headers=AUTH).content.decode()
    assert (
        f'llmchat_chat_turns_total{{model="{model}",outcome="complete",provider="openai"}} 2.0'
        in body
    )
    assert f'llmchat_tokens_total{{kind="input",model="{model}",provider="openai"}} 240.0' in body
    assert f'llmchat_cost_usd_total{{model="{model}",provider="openai"}} 0.002' in body


def test_errors_unpriced_calls_and_missing_timings(client: Client, token: str) -> None:
    model = unique_model()
    labels = {"provider": "anthropic", "model": model}
    errors_before = value("llmchat_provider_errors_total", provider="anthropic", code="overloaded")
    ttft_before = value("llmchat_chat_time_to_first_token_seconds_count", provider="anthropic")

    metrics.record_chat_turn(
        **turn(
            provider="anthropic",
            model=model,
            outcome="error",
            input_tokens=0,
            cached_tokens=0,
            output_tokens=0,
            reasoning_tokens=0,
            cost=None,
            ttft_ms=None,
            latency_ms=None,
            error_code="overloaded",
        )
    )
    metrics.record_chat_turn(
        **turn(
            provider="anthropic",
            model=model,
            outcome="partial",
            cache_write_tokens=50,
            cost=None,
            error_code="timeout",
        )
    )
    metrics.record_chat_turn(**turn(provider="anthropic", model=model, outcome="stopped"))

    assert value("llmchat_chat_turns_total", **labels, outcome="error") == 1
    assert value("llmchat_chat_turns_total", **labels, outcome="partial") == 1
    assert value("llmchat_chat_turns_total", **labels, outcome="stopped") == 1
    assert value("llmchat_unpriced_calls_total", **labels) == 2
    # Only the priced (stopped) turn adds to the cost.
    assert value("llmchat_cost_usd_total", **labels) == pytest.approx(0.00125)
    assert value("llmchat_tokens_total", **labels, kind="cache_write") == 50
    assert (
        value("llmchat_provider_errors_total", provider="anthropic", code="overloaded")
        == errors_before + 1
    )
    assert value("llmchat_provider_errors_total", provider="anthropic", code="timeout") >= 1
    # The errored turn had no timings: two of three turns were observed.
    assert (
        value("llmchat_chat_time_to_first_token_seconds_count", provider="anthropic")
        == ttft_before + 2
    )

    body = client.get("/metrics", headers=AUTH).content.decode()
    assert f'llmchat_unpriced_calls_total{{model="{model}",provider="anthropic"}} 2.0' in body
    assert 'llmchat_provider_errors_total{code="overloaded",provider="anthropic"}' in body


def test_a_turn_without_an_error_code_is_not_an_error(token: str) -> None:
    before = value("llmchat_provider_errors_total", provider="gemini", code="")
    metrics.record_chat_turn(**turn(provider="gemini", model=unique_model()))
    assert value("llmchat_provider_errors_total", provider="gemini", code="") == before
    assert (
        REGISTRY.get_sample_value(
            "llmchat_provider_errors_total", {"provider": "gemini", "code": ""}
        )
        is None
    )


@pytest.mark.parametrize(
    "model",
    ["x" * 101, "evil\nllmchat_fake 1", "tab\there", "nul\x00"],
)
def test_a_weird_model_name_is_labelled_other(model: str) -> None:
    provider = f"p-{uuid.uuid4().hex[:8]}"
    metrics.record_chat_turn(**turn(provider=provider, model=model))
    assert value("llmchat_chat_turns_total", provider=provider, model="other", outcome="complete")
    assert value("llmchat_tokens_total", provider=provider, model="other", kind="input") == 120
    assert (
        REGISTRY.get_sample_value(
            "llmchat_chat_turns_total",
            {"provider": provider, "model": model, "outcome": "complete"},
        )
        is None
    )


def test_a_long_but_sane_model_name_is_kept() -> None:
    model = "m" * 100
    provider = f"p-{uuid.uuid4().hex[:8]}"
    metrics.record_chat_turn(**turn(provider=provider, model=model))
    assert value("llmchat_chat_turns_total", provider=provider, model=model, outcome="complete")


def test_an_unknown_outcome_is_labelled_other() -> None:
    provider = f"p-{uuid.uuid4().hex[:8]}"
    metrics.record_chat_turn(**turn(provider=provider, outcome="generating"))
    assert value("llmchat_chat_turns_total", provider=provider, model="gpt-test", outcome="other")


def test_streams_move_the_gauge() -> None:
    before = value("llmchat_active_streams")
    metrics.stream_started()
    metrics.stream_started()
    assert value("llmchat_active_streams") == before + 2
    metrics.stream_finished()
    assert value("llmchat_active_streams") == before + 1
    metrics.stream_finished()
    assert value("llmchat_active_streams") == before


# --- Several worker processes ------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os
    from decimal import Decimal
    from llmchat import metrics

    metrics.record_chat_turn(
        provider="mp", model="mp-model", outcome="complete", input_tokens=10,
        cached_tokens=0, cache_write_tokens=0, output_tokens=5, reasoning_tokens=0,
        cost=Decimal("0.5"), ttft_ms=100, latency_ms=1000, error_code="",
    )
    metrics.stream_started()
    print(os.getpid())
    """
)


def run_worker(directory: Path) -> int:
    """One "worker": a separate process that counts into `directory` and exits."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.strip())


def test_several_processes_are_summed(
    client: Client, token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Multi-process mode is chosen when prometheus_client is first imported, long
    # before this test; so the counting happens in child processes (as in gunicorn
    # workers) and this process only reads their files, as /metrics does.
    first = run_worker(tmp_path)
    second = run_worker(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    body = client.get("/metrics", headers=AUTH).content.decode()
    assert 'llmchat_chat_turns_total{model="mp-model",outcome="complete",provider="mp"} 2.0' in body
    assert 'llmchat_tokens_total{kind="input",model="mp-model",provider="mp"} 20.0' in body
    assert 'llmchat_cost_usd_total{model="mp-model",provider="mp"} 1.0' in body
    assert 'llmchat_chat_duration_seconds_count{provider="mp"} 2.0' in body
    assert "llmchat_active_streams 2.0" in body
    # Only the workers' files: not this process's own (default registry) values.
    assert "python_gc_objects_collected_total" not in body

    # gunicorn's child_exit hook drops a dead worker's live gauge.
    hooks = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    hooks["child_exit"](None, SimpleNamespace(pid=first))
    body = client.get("/metrics", headers=AUTH).content.decode()
    assert "llmchat_active_streams 1.0" in body
    # Counters outlive their worker.
    assert 'llmchat_tokens_total{kind="input",model="mp-model",provider="mp"} 20.0' in body
    hooks["child_exit"](None, SimpleNamespace(pid=second))
    # No live worker left: the gauge is not reported at all.
    body = client.get("/metrics", headers=AUTH).content.decode()
    assert "\nllmchat_active_streams " not in body

    # gunicorn's on_starting hook clears what an earlier run left.
    (tmp_path / "unrelated.txt").write_text("kept")
    hooks["on_starting"](None)
    assert [p.name for p in tmp_path.iterdir()] == ["unrelated.txt"]


def test_gunicorn_creates_a_missing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "run" / "prometheus"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["on_starting"](None)
    assert missing.is_dir()


def test_the_hooks_do_nothing_without_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    hooks = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    hooks["child_exit"](None, SimpleNamespace(pid=12345))
    hooks["on_starting"](None)


def test_gunicorn_with_two_workers_sums_them(tmp_path: Path) -> None:
    """The production setup end to end: gunicorn, two uvicorn workers, one metrics
    directory. However the requests are spread over the workers, a scrape
    (answered by either) counts all of them."""
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    # A stale file from an "earlier run", which gunicorn must clear at start.
    stale = run_worker(metrics_dir)
    assert (metrics_dir / f"counter_{stale}.db").exists()
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ENV_FILE": "",
        **PRODUCTION,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        "GUNICORN_KEEPALIVE": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_TOKEN": TOKEN,
    }
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "llmchat.asgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(150):
            try:
                if get(port, "/metrics", AUTH).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start: " + (tmp_path / "server.log").read_text())
        # Wait for both workers to be up (each creates its files on import).
        for _ in range(150):
            if len(list(metrics_dir.glob("gauge_livesum_*.db"))) == 2:
                break
            time.sleep(0.1)
        assert not (metrics_dir / f"counter_{stale}.db").exists()

        for _ in range(20):
            assert get(port, "/metrics").status == 403
        scrape = get(port, "/metrics", AUTH)
        body = scrape.body.decode()  # type: ignore[attr-defined]
        assert scrape.status == 200
        assert 'llmchat_http_requests_total{method="GET",status="403"} 20.0' in body
        assert "mp-model" not in body  # the stale run's values are gone
        assert "llmchat_active_streams 0.0" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    # Every worker that exited was marked dead: no live gauges are left behind.
    assert list(metrics_dir.glob("gauge_livesum_*.db")) == []
