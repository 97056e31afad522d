"""Small helpers the vendor adapters share."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from Retry-After (seconds or an HTTP date) or retry-after-ms."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


def attr(obj: Any, *path: str) -> Any:
    """obj.a.b.c, for SDK models and dicts alike; None where a step is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj
