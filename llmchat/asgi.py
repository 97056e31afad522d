"""ASGI entry point: gunicorn -k uvicorn_worker.UvicornWorker llmchat.asgi:application"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")
django.setup(set_prefix=False)

# Django's handler, but each request is one sync call in a worker thread
# (llmchat/handlers.py says why).
from llmchat.handlers import ASGIHandler  # noqa: E402

application = ASGIHandler()

# Warm the provider SDKs in each worker before it takes requests.
from providers.registry import preload_sdks  # noqa: E402

preload_sdks()
