"""Per-user limits counted in the cache, so that with REDIS_URL every process of
every server shares them: requests per window, and streams open at once.

Fixed windows (a burst can reach twice the rate across a window boundary; the
streams limit bounds the damage). Counters are created with `add` and moved with
`incr`/`decr`, which Redis does atomically.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    limit: int
    window: int  # seconds


def parse_rate(value: str) -> Rate | None:
    """ "30/m" -> Rate(30, 60); empty -> None (no limit)."""
    value = (value or "").strip()
    if not value:
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(\d*)\s*([smhd])", value)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(f"Bad rate {value!r}: use N/s, N/m, N/h or N/d, like 30/m")
    return Rate(int(match.group(1)), int(match.group(2) or 1) * _UNITS[match.group(3)])


def hit(key: str, rate: Rate, now: float | None = None) -> float | None:
    """Count one request; None if allowed, else seconds until it would be."""
    now = time.time() if now is None else now
    window = int(now // rate.window)
    counter = f"rl:{key}:{window}"
    cache.add(counter, 0, timeout=rate.window + 5)
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, timeout=rate.window + 5)
        count = 1
    if count <= rate.limit:
        return None
    return max(math.ceil((window + 1) * rate.window - now), 1)


def acquire_slot(key: str, limit: int, ttl: int) -> bool:
    """Take one of `limit` slots (streams open at once). The counter expires after
    `ttl` seconds, in case a process died holding slots."""
    counter = f"slots:{key}"
    cache.add(counter, 0, timeout=ttl)
    try:
        taken = cache.incr(counter)
    except ValueError:
        cache.add(counter, 1, timeout=ttl)
        taken = 1
    if taken > limit:
        release_slot(key)
        return False
    cache.touch(counter, ttl)
    return True


def release_slot(key: str) -> None:
    counter = f"slots:{key}"
    try:
        if cache.decr(counter) < 0:
            cache.set(counter, 0)
    except ValueError:
        pass  # expired: nothing to release
