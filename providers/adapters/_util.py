"""Small helpers the vendor adapters share."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from Retry-After (seconds or an HTTP date) or retry-after-ms; None
    when there is none, or none that makes sense (a vendor's header is not
    allowed to break the error it came with)."""
    if not headers:
        return None
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(parsed.timestamp() - time.time(), 0.0)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def attr(obj: Any, *path: str) -> Any:
    """obj.a.b.c, for SDK models and dicts alike; None where a step is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj
