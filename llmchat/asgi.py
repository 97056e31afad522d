"""ASGI entry point: gunicorn -k uvicorn_worker.UvicornWorker llmchat.asgi:application"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")

application = get_asgi_application()

# Warm the provider SDKs in each worker before it takes requests.
from providers.registry import preload_sdks  # noqa: E402

preload_sdks()
