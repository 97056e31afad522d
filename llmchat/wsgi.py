"""WSGI entry point, for tools that need one. llmchat is served over ASGI (asgi.py):
its chat replies stream from async views."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmchat.settings")

application = get_wsgi_application()
