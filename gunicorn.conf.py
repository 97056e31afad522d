"""gunicorn settings for production: ASGI through uvicorn workers.

    gunicorn llmchat.asgi:application   (this file is read from the working directory)

Each worker is one asyncio event loop that can hold hundreds of open chat
streams, so a few workers (one per core) go a long way.
"""

import glob
import os
from typing import Any

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
worker_class = "uvicorn_worker.UvicornWorker"

# With async workers this is a heartbeat limit, not a request limit: a chat
# stream may stay open for minutes while the worker keeps answering the arbiter.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# On SIGTERM or a reload, workers stop accepting and get this long to finish the
# replies they are streaming before they are killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "120"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# Restart workers now and then to bound slow memory growth; 0 turns it off.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10

# The app logs one JSON line per request itself (llmchat.request).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Proxies whose X-Forwarded-* headers are trusted.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus with several workers: when PROMETHEUS_MULTIPROC_DIR is set, each
# worker keeps its metric values in files there and /metrics sums them (see
# llmchat/metrics.py). At start the directory is created if missing and files
# left by an earlier run are removed; a dead worker's "live" gauges (open chat
# streams) are dropped when it exits.
_METRIC_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def on_starting(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for pattern in _METRIC_FILES:
        for name in glob.glob(os.path.join(glob.escape(path), pattern)):
            os.remove(name)


def child_exit(server: Any, worker: Any) -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    # Everything loaded at start-up (Django, the apps, their modules) lives as
    # long as the worker: out of the garbage collector's sight, a full collection
    # no longer walks all of it — a pause of about 200 ms in a worker holding
    # hundreds of streams, each waiting (docs/performance.md).
    import gc

    gc.collect()
    gc.freeze()
