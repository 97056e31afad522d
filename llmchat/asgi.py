"""ASGI entry point: gunicorn -k uvicorn_worker.UvicornWorker llmchat.asgi:application"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")
application = get_asgi_application()

# Load what a first request would (the SDKs, the URLconf, the templates) in each
# worker before it takes requests.
from llmchat.warmup import warm_up  # noqa: E402

warm_up()
