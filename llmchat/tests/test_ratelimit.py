"""The cache-backed limits, in-process and across two processes sharing Redis."""

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from conftest import require_redis
from llmchat import ratelimit
from llmchat.tests.test_settings import BASE_DIR


def test_parse_rate() -> None:
    assert ratelimit.parse_rate("30/m") == ratelimit.Rate(30, 60)
    assert ratelimit.parse_rate("5/10s") == ratelimit.Rate(5, 10)
    assert ratelimit.parse_rate("1000/d") == ratelimit.Rate(1000, 86400)
    assert ratelimit.parse_rate("") is None
    for bad in ("30", "x/m", "0/m", "3/w"):
        with pytest.raises(ImproperlyConfigured):
            ratelimit.parse_rate(bad)


@pytest.fixture(params=["memory", "redis"])
def limits_cache(request: Any) -> Any:
    """Each test of the limits, with the process's own cache and with Redis."""
    if request.param == "redis":
        return request.getfixturevalue("redis_cache")
    return None


def test_a_fixed_window(limits_cache: Any) -> None:
    rate = ratelimit.Rate(2, 60)
    assert ratelimit.hit("k", rate, now=120.0) is None
    assert ratelimit.hit("k", rate, now=130.0) is None
    assert ratelimit.hit("k", rate, now=150.0) == 30
    assert ratelimit.hit("k", rate, now=180.0) is None  # the next window


def test_slots(limits_cache: Any) -> None:
    assert ratelimit.acquire_slot("u", 2, 60)
    assert ratelimit.acquire_slot("u", 2, 60)
    assert not ratelimit.acquire_slot("u", 2, 60)
    ratelimit.release_slot("u")
    assert ratelimit.acquire_slot("u", 2, 60)
    ratelimit.release_slot("nobody")  # releasing what was never taken is harmless


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    """The cache on Redis (database 14, emptied), as with REDIS_URL."""
    require_redis()
    import redis

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/14",
            "KEY_PREFIX": "llmchat-test",
        }
    }
    client = redis.Redis.from_url("redis://127.0.0.1:6379/14")
    client.flushdb()
    yield client
    client.flushdb()


def test_with_redis_each_count_is_one_round_trip(redis_cache: Any, monkeypatch: Any) -> None:
    import redis

    rate = ratelimit.Rate(2, 60)
    ratelimit.hit("warm", rate)  # the first run of each script loads it on the server
    ratelimit.acquire_slot("warm", 1, 60)
    ratelimit.release_slot("warm")
    sent: list[str] = []
    execute = redis.Redis.execute_command

    def counted(self: Any, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    assert ratelimit.hit("k", rate, now=120.0) is None
    assert ratelimit.acquire_slot("u", 2, 60)
    assert not ratelimit.acquire_slot("u", 1, 60)  # one taken: a limit of 1 is full
    ratelimit.release_slot("u")
    assert sent == ["EVALSHA"] * 4


def test_with_redis_the_counters_are_the_caches_own_and_expire(redis_cache: Any) -> None:
    # (The limits themselves: test_a_fixed_window and test_slots, on Redis too.)
    assert ratelimit.hit("k", ratelimit.Rate(2, 60), now=120.0) is None
    assert ratelimit.acquire_slot("u", 2, 60)
    assert ratelimit.acquire_slot("u", 2, 60)
    ratelimit.release_slot("nobody")  # releasing what was never taken is harmless
    # The cache's own keys, integers it reads back; each expires.
    assert cache.get("slots:u") == 2
    assert cache.get("slots:nobody") is None
    for key in redis_cache.keys("*"):
        assert 0 < redis_cache.ttl(key) <= 65
    # A refused slot on a new counter leaves it expiring too.
    assert not ratelimit.acquire_slot("none", 0, 60)
    assert cache.get("slots:none") == 0
    assert 0 < redis_cache.ttl(cache.make_and_validate_key("slots:none")) <= 60
    # A counter never goes below zero.
    ratelimit.release_slot("u")
    ratelimit.release_slot("u")
    ratelimit.release_slot("u")
    assert cache.get("slots:u") == 0


WORKER = """
import os, sys, django
sys.path.insert(0, {base!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "llmchat.settings"
django.setup()
from llmchat import ratelimit
rate = ratelimit.Rate(25, 3600)
allowed = sum(ratelimit.hit({key!r}, rate) is None for _ in range(40))
slots = sum(ratelimit.acquire_slot({key!r}, 3, 60) for _ in range(5))
print(allowed, slots)
"""


def test_limits_hold_across_two_processes_sharing_redis() -> None:
    require_redis()
    key = f"test-{uuid.uuid4().hex}"
    env: dict[str, Any] = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "ENV_FILE": "",
        "DEBUG": "true",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "DATABASE_URL": "sqlite:///:memory:",
    }
    code = WORKER.format(base=str(BASE_DIR), key=key)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    allowed = sum(int(r[0]) for r in results)
    slots = sum(int(r[1]) for r in results)
    assert allowed == 25  # 80 attempts, one shared limit
    assert slots == 3
