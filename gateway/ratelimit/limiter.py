"""Per-descriptor decisions on top of `limits`: one storage round-trip per limited descriptor.

Refused keys are remembered locally until their window frees a slot (as envoyproxy/ratelimit's local cache does),
so a client hammering past its limit costs no storage traffic at all.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from limits import storage, strategies

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


def storage_for(redis_url: str, key_prefix: str, timeout_s: float) -> storage.Storage:
    """In-process by default; Redis (shared by every limiter replica) when REDIS_URL is set."""
    if not redis_url:
        return InProcessMovingWindow()
    backend = storage.storage_from_string(
        redis_url,
        key_prefix=f"{key_prefix}ratelimit",
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    if not isinstance(backend, storage.Storage):
        raise ConfigError(f"REDIS_URL names an asyncio storage ({type(backend).__name__}); the limiter needs redis://")
    return backend


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
