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
    """A Usage from a vendor's (already normalized) numbers: Usage.normalized,
    which no number a vendor sends can break."""
    return Usage.normalized(
        input_tokens=input_tokens,
        cached_tokens=cached_tokens,
        cache_write_tokens=cache_write_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
    )


def count(value: Any) -> int:
    """One of a vendor's token counts as an int (0 when missing or malformed),
    for the adapters that add two counts before normalizing."""
    return Usage.normalized(input_tokens=value, output_tokens=0).input_tokens


def attr(obj: Any, *path: str) -> Any:
    """obj.a.b.c, for SDK models and dicts alike; None where a step is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj
