"""The /health check: is the database reachable, does the cache work."""

import logging
import uuid

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

logger = logging.getLogger(__name__)


def check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        logger.exception("health check: database unreachable")
        return False


def check_cache() -> bool:
    key = f"health:{uuid.uuid4().hex}"
    try:
        cache.set(key, "1", timeout=10)
        ok = cache.get(key) == "1"
        cache.delete(key)
        return ok
    except Exception:
        logger.exception("health check: cache unreachable")
        return False


def response() -> JsonResponse:
    parts = {"database": check_database(), "cache": check_cache()}
    body = {"status": "ok" if all(parts.values()) else "error"}
    body.update({name: "ok" if ok else "error" for name, ok in parts.items()})
    resp = JsonResponse(body, status=200 if all(parts.values()) else 503)
    resp["Cache-Control"] = "no-store"
    return resp


async def aresponse() -> JsonResponse:
    # Both checks do blocking I/O; run them where the ORM expects to be.
    return await sync_to_async(response)()
