"""Prometheus metrics, and the protected /metrics endpoint that exposes them.

What is counted
    HTTP requests (by method and status; no path label, whose values are
    unbounded), chat turns (by provider, model and outcome), time to first token
    and turn duration, tokens by kind, cost in USD, unpriced calls, provider
    errors by code, and the number of chat streams open right now. The chat code
    reports a finished turn with `record_chat_turn()` and brackets each stream
    with `stream_started()` / `stream_finished()`; `RequestLogMiddleware` calls
    `observe_request()` once per request.

Who may read /metrics
    `HealthCheckMiddleware` answers /metrics before host validation and the HTTPS
    redirect (Prometheus scrapes by IP over plain HTTP). A scrape is allowed with
    `Authorization: Bearer <METRICS_TOKEN>` or from a client address listed in
    METRICS_ALLOWED_IPS (single IPs or CIDR networks such as 10.0.0.0/8);
    anything else gets 403. With neither setting configured, metrics are off and
    /metrics is a 404. Behind a reverse proxy the client address is what the
    server derives from X-Forwarded-For (gunicorn's `forwarded_allow_ips`); if
    the proxy does not send that header, every request through it comes from the
    proxy's address, so do not list that address.

Several worker processes (gunicorn)
    Each worker counts in its own memory, so a scrape answered by one worker
    would show only that worker's share. Set the environment variable
    PROMETHEUS_MULTIPROC_DIR to an empty directory writable by the workers (a
    tmpfs is ideal) before gunicorn starts: prometheus_client then keeps every
    value in per-process files there, and /metrics sums them across workers with
    `prometheus_client.multiprocess.MultiProcessCollector` over a fresh registry
    (the per-process default collectors - process, platform, GC - are left out,
    as they cannot be summed). gunicorn.conf.py creates the directory if needed
    and empties it of metric files when gunicorn starts (values from an earlier
    run must not be summed in), and calls `mark_process_dead()` when a worker
    exits, so that the `llmchat_active_streams` gauge (mode "livesum") counts
    live workers only. Any other process that imports this module with the
    variable set (manage.py commands, say) writes files there too; its counts
    are included until the next gunicorn start. Without the variable
    (runserver, tests, one process) the default registry is used.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from decimal import Decimal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
MAX_LABEL_LENGTH = 100

OUTCOMES = frozenset({"complete", "partial", "error", "stopped"})
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

# --- HTTP -------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "llmchat_http_requests_total",
    "HTTP requests answered, by method and status code.",
    ["method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "llmchat_http_request_duration_seconds",
    "Time until the response (for a streamed reply: its headers) was ready.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# --- Chat -------------------------------------------------------------------------

CHAT_TURNS = Counter(
    "llmchat_chat_turns_total",
    "Finished chat turns, by outcome (complete, partial, error, stopped).",
    ["provider", "model", "outcome"],
)
CHAT_TTFT = Histogram(
    "llmchat_chat_time_to_first_token_seconds",
    "Time from sending a chat request to the provider until the first token.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
)
CHAT_DURATION = Histogram(
    "llmchat_chat_duration_seconds",
    "Duration of a chat turn, from the provider request to the last token.",
    ["provider"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
TOKENS = Counter(
    "llmchat_tokens_total",
    "Tokens used, by kind (input, cached, cache_write, output, reasoning).",
    ["provider", "model", "kind"],
)
COST = Counter(
    "llmchat_cost_usd_total",
    "Cost of chat turns in US dollars (priced calls only).",
    ["provider", "model"],
)
UNPRICED_CALLS = Counter(
    "llmchat_unpriced_calls_total",
    "Chat turns whose model had no price, so their cost is not in llmchat_cost_usd_total.",
    ["provider", "model"],
)
PROVIDER_ERRORS = Counter(
    "llmchat_provider_errors_total",
    "Chat turns that ended with a provider error, by error code.",
    ["provider", "code"],
)
ACTIVE_STREAMS = Gauge(
    "llmchat_active_streams",
    "Chat replies being streamed right now.",
    multiprocess_mode="livesum",
)


def _label(value: str) -> str:
    """A label value as given, unless it could blow up the number of series or the
    exposition format: too long or not printable becomes "other"."""
    if len(value) > MAX_LABEL_LENGTH or not value.isprintable():
        return OTHER
    return value


def record_chat_turn(
    *,
    provider: str,
    model: str,
    outcome: str,
    input_tokens: int,
    cached_tokens: int,
    cache_write_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
    cost: Decimal | None,
    ttft_ms: int | None,
    latency_ms: int | None,
    error_code: str,
) -> None:
    """Count one finished chat turn.

    `cost` None means the model is unpriced (counted in
    llmchat_unpriced_calls_total, not in the cost); `ttft_ms` / `latency_ms` None
    are not observed; `error_code` "" means no provider error. An outcome other
    than complete, partial, error or stopped is counted as "other".
    """
    provider = _label(provider)
    model = _label(model)
    CHAT_TURNS.labels(provider, model, outcome if outcome in OUTCOMES else OTHER).inc()
    for kind, count in (
        ("input", input_tokens),
        ("cached", cached_tokens),
        ("cache_write", cache_write_tokens),
        ("output", output_tokens),
        ("reasoning", reasoning_tokens),
    ):
        if count > 0:
            TOKENS.labels(provider, model, kind).inc(count)
    if cost is None:
        UNPRICED_CALLS.labels(provider, model).inc()
    elif cost >= 0:
        COST.labels(provider, model).inc(float(cost))
    if ttft_ms is not None:
        CHAT_TTFT.labels(provider).observe(ttft_ms / 1000)
    if latency_ms is not None:
        CHAT_DURATION.labels(provider).observe(latency_ms / 1000)
    if error_code:
        PROVIDER_ERRORS.labels(provider, _label(error_code)).inc()


def stream_started() -> None:
    ACTIVE_STREAMS.inc()


def stream_finished() -> None:
    ACTIVE_STREAMS.dec()


def observe_request(method: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else OTHER
    HTTP_REQUESTS.labels(method, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method).observe(max(seconds, 0.0))


# --- Exposition -------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """What a scrape shows: every worker's values when running multi-process,
    otherwise this process's default registry."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return merged
    return REGISTRY


def render() -> bytes:
    return generate_latest(registry())


def _bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _token_ok(request: HttpRequest, expected: str) -> bool:
    if not expected:
        return False
    given = _bearer_token(request)
    return hmac.compare_digest(given.encode(), expected.encode())


def _ip_allowed(remote_addr: str, allowed: list[str]) -> bool:
    if not remote_addr or not allowed:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for entry in allowed:
        entry = entry.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            logger.warning("METRICS_ALLOWED_IPS: ignoring %r, not an IP or network", entry)
            continue
        if address.version == network.version and address in network:
            return True
    return False


def _text(body: str, status: int) -> HttpResponse:
    resp = HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")
    resp["Cache-Control"] = "no-store"
    return resp


def response(request: HttpRequest) -> HttpResponse:
    """The /metrics answer. CPU only (no database), so it is safe to call from the
    event loop as well as from a sync request."""
    token: str = getattr(settings, "METRICS_TOKEN", "") or ""
    allowed: list[str] = list(getattr(settings, "METRICS_ALLOWED_IPS", []) or [])
    if not token and not allowed:
        return _text("Not found: metrics are off.\n", 404)
    if not (_token_ok(request, token) or _ip_allowed(request.META.get("REMOTE_ADDR", ""), allowed)):
        return _text("Forbidden.\n", 403)
    if request.method not in ("GET", "HEAD"):
        resp = _text("Method not allowed.\n", 405)
        resp["Allow"] = "GET, HEAD"
        return resp
    resp = HttpResponse(b"" if request.method == "HEAD" else render())
    resp["Content-Type"] = CONTENT_TYPE_LATEST
    resp["Cache-Control"] = "no-store"
    return resp
