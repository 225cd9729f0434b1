"""TTL cache for answers and session lookups: Redis with native expiry when REDIS_URL is set, else in-process.

The in-process store is bounded in entries (least recently used out) and in time (every entry has a TTL, and
purge_expired() removes the expired ones). A Redis outage costs one short timeout: the cache then serves from the
in-process store and tries Redis again after REDIS_RETRY_SECONDS, so requests never fail because of the cache.
Only values that can be recomputed are cached, so a lost or stale entry is never wrong, only slower.

What is cached holds no personal data: the knowledge base's intent (a word such as "packages") under a key made
from a hash of the message, never its text. A message that carries contact details or a name is not cached at all
(conversation.py), and an erasure forgets the keys of everything the person typed (forget()), because a hash of a
text can still confirm a guess of it; the rest expires within CACHE_TTL_SECONDS.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)


def intent_key(normalised_text: str, language: str) -> str:
    """The key of the intent cached for a message (its normalised text): a hash, so no text is ever a key."""
    return f"intent:{language}:{hashlib.sha256(normalised_text.encode()).hexdigest()[:32]}"


class MemoryCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def purge_expired(self) -> int:
        """Remove every expired entry; returns how many."""
        with self._lock:
            now = self._clock()
            expired = [key for key, (expires_at, _) in self._entries.items() if expires_at <= now]
            for key in expired:
                del self._entries[key]
            return len(expired)

    def __len__(self) -> int:
        return len(self._entries)


class Cache:
    def __init__(
        self,
        memory: MemoryCache,
        redis_client: redis.Redis | None = None,
        key_prefix: str = "",
        retry_s: float = 5.0,
    ):
        self.memory = memory
        self.redis = redis_client
        self.prefix = key_prefix + "chat:"
        self.retry_s = retry_s
        self._redis_down_until = 0.0
        self._state_lock = threading.Lock()

    @property
    def backend(self) -> str:
        """'redis', 'memory (redis down)' or 'memory'."""
        if self.redis is None:
            return "memory"
        return "memory (redis down)" if self._redis_down() else "redis"

    def _redis_down(self) -> bool:
        return time.monotonic() < self._redis_down_until

    def _usable_redis(self) -> redis.Redis | None:
        """The client, unless Redis is absent or in its back-off after a failure."""
        return self.redis if self.redis is not None and not self._redis_down() else None

    def _redis_failed(self, exc: Exception) -> None:
        with self._state_lock:
            was_up = not self._redis_down()
            self._redis_down_until = time.monotonic() + self.retry_s
        if was_up:
            log.warning("redis unavailable, caching in process", extra={"error": type(exc).__name__})

    def get(self, key: str) -> str | None:
        if client := self._usable_redis():
            try:
                value = client.get(self.prefix + key)
                return value.decode() if isinstance(value, bytes) else value  # bytes: the client does not decode
            except redis.RedisError as exc:
                self._redis_failed(exc)
        return self.memory.get(key)

    def set(self, key: str, value: str, ttl_s: int) -> None:
        if client := self._usable_redis():
            try:
                client.set(self.prefix + key, value, ex=max(1, int(ttl_s)))
                return
            except redis.RedisError as exc:
                self._redis_failed(exc)
        self.memory.set(key, value, ttl_s)

    def forget(self, keys: list[str]) -> None:
        """Remove these entries from Redis and from this process (an erasure); a Redis outage leaves them to expire."""
        for key in keys:
            self.memory.delete(key)
        if keys and (client := self._usable_redis()):
            try:
                client.delete(*(self.prefix + key for key in keys))
            except redis.RedisError as exc:
                self._redis_failed(exc)

    def purge_expired(self) -> int:
        """Expired in-process entries removed; Redis expires its keys itself."""
        return self.memory.purge_expired()

    def ping_redis(self) -> None:
        """For diagnostics: raises when Redis is configured and does not answer."""
        if self.redis is not None:
            self.redis.ping()
