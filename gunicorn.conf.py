"""gunicorn settings for production: ASGI through uvicorn workers.

    gunicorn llmchat.asgi:application   (this file is read from the working directory)

Each worker is one asyncio event loop that can hold hundreds of open chat
streams, so a few workers (one per core) go a long way.
"""

import os

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
