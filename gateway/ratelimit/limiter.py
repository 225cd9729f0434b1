"""Per-descriptor decisions on top of `limits`: one storage round-trip per limited descriptor.

Refused keys are remembered locally until their window frees a slot (as envoyproxy/ratelimit's local cache does),
so a client hammering past its limit costs no storage traffic at all. With Redis, a Redis that does not answer
makes the limiter count in its own memory (`RedisOrMemory`), per replica, until Redis answers again.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import storage, strategies
from limits.storage import MovingWindowSupport

from gateway.ratelimit.memory import InProcessMovingWindow
from gateway.ratelimit.policy import Limit, Policy
from services.runtime.config import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: Limit | None = None
    retry_after_s: int = 0


ALLOW = Decision(True)


def storage_for(redis_url: str, key_prefix: str, timeout_s: float, retry_s: float = 5.0) -> storage.Storage:
    """In-process by default; Redis (shared by every limiter replica) when REDIS_URL is set, with this replica's
    memory standing in while Redis does not answer."""
    if not redis_url:
        return InProcessMovingWindow()
    backend = storage.storage_from_string(
        redis_url,
        key_prefix=f"{key_prefix}ratelimit",
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    if not isinstance(backend, storage.Storage) or not isinstance(backend, MovingWindowSupport):
        raise ConfigError(f"REDIS_URL names an asyncio storage ({type(backend).__name__}); the limiter needs redis://")
    return RedisOrMemory(backend, retry_s)


class RedisOrMemory(storage.Storage, MovingWindowSupport):
    """Redis while it answers; while it does not, this replica's own memory, so a lost Redis shrinks the budget's
    scope to one replica instead of removing it. Redis is tried again every `retry_s` (one request pays for the
    try, at most RATELIMIT_STORAGE_TIMEOUT_S). When it answers, the counts made in memory are dropped: Redis still
    has the hits from before the outage (none if it restarted empty) but not those made during it."""

    def __init__(self, redis: storage.Storage, retry_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if not isinstance(redis, MovingWindowSupport):
            raise TypeError("the shared storage must support moving windows")
        self.redis: storage.Storage = redis
        self._redis_window: MovingWindowSupport = redis
        self.memory = InProcessMovingWindow()
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._in_memory = False
        self._retry_at = 0.0
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def in_memory(self) -> bool:
        """True while this replica counts alone, Redis not answering."""
        return self._in_memory

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Called with `in_memory` whenever it changes (health and metrics follow it)."""
        self._listeners.append(listener)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError  # Redis's own errors never leave this storage

    def _use_redis(self) -> bool:
        if not self._in_memory:
            return True
        with self._lock:
            now = self._clock()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_s  # one request tries Redis; the others keep to memory meanwhile
            return True

    def _switch(self, in_memory: bool, error: Exception | None = None) -> None:
        if self._in_memory == in_memory:
            return  # the common case, without the lock
        with self._lock:
            if self._in_memory == in_memory:
                return
            self._in_memory = in_memory
            self._retry_at = self._clock() + self.retry_s
        if in_memory:
            log.warning("Redis unreachable: counting in this replica's memory until it answers",
                        extra={"error": type(error).__name__, "retry_s": self.retry_s})
        else:
            dropped = self.memory.reset()
            log.warning("Redis answers again: counting there; this replica's in-memory counts are dropped",
                        extra={"keys_dropped": dropped})
        for listener in self._listeners:
            listener(in_memory)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if self._use_redis():
            try:
                acquired = self._redis_window.acquire_entry(key, limit, expiry, amount)
            except self.redis.base_exceptions as exc:
                self._switch(True, exc)
            else:
                self._switch(False)
                return acquired
        return self.memory.acquire_entry(key, limit, expiry, amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        if not self._in_memory:
            try:
                return self._redis_window.get_moving_window(key, limit, expiry)
            except self.redis.base_exceptions as exc:
                self._switch(True, exc)
        return self.memory.get_moving_window(key, limit, expiry)

    def check(self) -> bool:
        """Pings Redis (the readiness loop calls this every few seconds, so the state is right without traffic);
        True either way: the limiter can decide, from memory at worst."""
        if self._use_redis():
            if self.redis.check():
                self._switch(False)
            else:
                self._switch(True, ConnectionError("ping failed"))
        return True

    def reset(self) -> int | None:
        self.memory.reset()
        return self.redis.reset()

    def clear(self, key: str) -> None:
        self.memory.clear(key)
        self.redis.clear(key)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("moving windows only")

    def get(self, key: str) -> int:
        raise NotImplementedError("moving windows only")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("moving windows only")


class DescriptorLimiter:
    def __init__(self, policy: Policy, backend: storage.Storage):
        self.policy = policy
        self.backend = backend
        self.strategy = strategies.MovingWindowRateLimiter(backend)
        self._refused_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, entries: list[tuple[str, str]], hits: int = 1) -> Decision:
        limit = self.policy.limit_for(entries)
        if limit is None:
            return ALLOW
        key = "|".join(f"{k}={v}" for k, v in entries)
        now = time.time()
        until = self._refused_until.get(key)
        if until is not None:
            if until > now and not limit.shadow_mode:
                return Decision(False, limit, max(1, math.ceil(until - now)))
            with self._lock:
                self._refused_until.pop(key, None)
        if self.strategy.hit(limit.item, self.policy.domain, key, cost=hits):
            return ALLOW
        reset_at = self.strategy.get_window_stats(limit.item, self.policy.domain, key).reset_time
        retry_after = max(1, math.ceil(reset_at - now))
        if limit.shadow_mode:
            log.info("over limit (shadow mode, allowed)", extra={"limit": limit.name})
            return Decision(True, limit, retry_after)
        with self._lock:
            self._refused_until[key] = reset_at
            if len(self._refused_until) > 100_000:
                self._expire_refusals(now)
        log.warning("rate limit exceeded", extra={"limit": limit.name, "retry_after_s": retry_after})
        return Decision(False, limit, retry_after)

    def _expire_refusals(self, now: float) -> None:
        for key in [k for k, until in self._refused_until.items() if until <= now]:
            del self._refused_until[key]

    def healthy(self) -> bool:
        return bool(self.backend.check())
