"""The TTL cache: bounded in memory, native expiry in Redis, and no failed request when Redis goes away."""
from __future__ import annotations

import pytest
import redis

from services.chat.cache import Cache, MemoryCache
from services.runtime.redis_client import redis_from_env
from testsupport.redis_server import PrivateRedis


class Clock:
    """A clock the test moves forward, so expiry is checked without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_is_bounded_in_entries_least_recently_used_out():
    cache = MemoryCache(max_entries=3)
    for key in "abc":
        cache.set(key, key.upper(), ttl_s=60)
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.set("d", "D", ttl_s=60)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == ["A", "C", "D"]


def test_memory_store_is_bounded_in_time():
    clock = Clock()
    cache = MemoryCache(max_entries=10, clock=clock)
    cache.set("short", "1", ttl_s=5)
    cache.set("long", "2", ttl_s=50)
    clock.now += 10
    assert cache.get("short") is None
    assert cache.get("long") == "2"


def test_purge_removes_one_million_expired_entries_and_reports_the_count():
    clock = Clock()
    cache = MemoryCache(max_entries=2_000_000, clock=clock)
    for i in range(1_000_000):
        cache.set(f"answer:{i}", "x", ttl_s=60)
    cache.set("fresh", "y", ttl_s=3600)
    clock.now += 120
    assert cache.purge_expired() == 1_000_000
    assert len(cache) == 1 and cache.get("fresh") == "y"
    assert cache.purge_expired() == 0


@pytest.mark.redis
def test_redis_keeps_entries_with_native_expiry(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    cache = Cache(MemoryCache(10), client, redis_prefix)
    cache.set("answer:pl:abc", "greeting:2", ttl_s=120)
    assert cache.get("answer:pl:abc") == "greeting:2"
    assert 0 < client.ttl(f"{redis_prefix}chat:answer:pl:abc") <= 120
    assert len(cache.memory) == 0
    assert cache.backend == "redis"


@pytest.fixture
def own_redis(tmp_path):
    """A private redis-server on a free port that the test may kill and restart (the shared one stays up)."""
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


def test_redis_outage_falls_back_to_memory_and_redis_is_used_again_when_it_returns(own_redis):
    client = redis_from_env(own_redis.url)  # the client the server uses
    assert client is not None
    cache = Cache(MemoryCache(100), client, "t:", retry_s=0)
    cache.set("k1", "before", ttl_s=60)
    assert client.get("t:chat:k1") == b"before"

    own_redis.kill()
    cache.set("k2", "during", ttl_s=60)  # no exception: served from memory
    assert cache.get("k2") == "during"
    assert cache.memory.get("k2") == "during"

    own_redis.start()
    cache.set("k3", "after", ttl_s=60)
    assert client.get("t:chat:k3") == b"after"
    assert cache.get("k3") == "after" and cache.memory.get("k3") is None
