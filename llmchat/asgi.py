"""ASGI entry point: gunicorn -k uvicorn_worker.UvicornWorker llmchat.asgi:application"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")
django.setup(set_prefix=False)

# Django's handler, but each request is one sync call in a worker thread
# (llmchat/handlers.py says why).
from llmchat.handlers import ASGIHandler  # noqa: E402

application = ASGIHandler()

# Load what a first request would (the SDKs, the URLconf, the templates) in each
# worker before it takes requests.
from llmchat.warmup import warm_up  # noqa: E402

warm_up()
