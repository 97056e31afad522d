"""Small helpers the vendor adapters share."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from providers.base import Usage


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


def usage(
    *,
    input_tokens: Any,
    cached_tokens: Any = 0,
    cache_write_tokens: Any = 0,
    output_tokens: Any,
    reasoning_tokens: Any = 0,
) -> Usage:
    """A Usage from a vendor's (already normalized) numbers.

    Vendor data is not allowed to break a reply: missing counts are 0, and parts
    that exceed their whole (a vendor bug) stretch the whole instead of raising.
    """
    cached, write, reasoning = _n(cached_tokens), _n(cache_write_tokens), _n(reasoning_tokens)
    return Usage(
        input_tokens=max(_n(input_tokens), cached + write),
        cached_tokens=cached,
        cache_write_tokens=write,
        output_tokens=max(_n(output_tokens), reasoning),
        reasoning_tokens=reasoning,
    )


def _n(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def attr(obj: Any, *path: str) -> Any:
    """obj.a.b.c, for SDK models and dicts alike; None where a step is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj
