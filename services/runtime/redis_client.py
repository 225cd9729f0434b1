"""The optional Redis connection (REDIS_URL). Keys carry REDIS_KEY_PREFIX so deployments and test runs never collide."""
from __future__ import annotations

import redis

from services.runtime.config import env_float, env_str


def redis_url() -> str:
    return env_str("REDIS_URL", "")


def key_prefix() -> str:
    return env_str("REDIS_KEY_PREFIX", "novahouse:")


def redis_from_env(url: str | None = None) -> redis.Redis | None:
    """A client with short timeouts, so a Redis outage costs milliseconds, not a hung request."""
    url = url if url is not None else redis_url()
    if not url:
        return None
    timeout = env_float("REDIS_TIMEOUT_S", 0.5, minimum=0.01)
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )
