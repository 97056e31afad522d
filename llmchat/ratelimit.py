"""Per-user limits counted in the cache, so that with REDIS_URL every process of
every server shares them: requests per window, and streams open at once.

Fixed windows (a burst can reach twice the rate across a window boundary; the
streams limit bounds the damage). With Redis, each count is one Lua script (one
round trip, atomic); otherwise counters are created with `add` and moved with
`incr`/`decr` in the process's own cache.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
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
    redis = _redis()
    if redis is not None:
        count = int(_run(redis, _HIT, counter, rate.window + 5))
    else:
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
    redis = _redis()
    if redis is not None:
        return bool(_run(redis, _ACQUIRE, counter, limit, ttl))
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
    redis = _redis()
    if redis is not None:
        _run(redis, _RELEASE, counter)
        return
    try:
        if cache.decr(counter) < 0:
            cache.set(counter, 0)
    except ValueError:
        pass  # expired: nothing to release


# With Redis, each step is one script: one round trip instead of two to four
# (add, incr, touch), and atomic. The counters are the cache's own keys (its
# prefix and version), integers as Django's Redis cache stores them.

_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""

_ACQUIRE = """
local taken = redis.call('INCR', KEYS[1])
if taken > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# A counter that expired (its process died holding slots) has nothing to give back;
# one is never left below zero.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) < 0 then
  redis.call('INCR', KEYS[1])
end
return 0
"""


_registered: dict[str, Any] = {}  # script -> redis-py's Script (its SHA, run by EVALSHA)


def _redis() -> RedisCache | None:
    """The cache if it is Redis, else None (the cache's own add/incr/decr then,
    atomic enough in one process)."""
    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def _run(backend: RedisCache, script: str, counter: str, *args: int) -> Any:
    """Run one of the scripts on the cache's Redis server, on the cache's key
    for `counter`."""
    key = backend.make_and_validate_key(counter)
    client = backend._cache.get_client(key, write=True)
    runner = _registered.get(script)
    if runner is None:
        runner = _registered[script] = client.register_script(script)
    return runner(keys=[key], args=list(args), client=client)
