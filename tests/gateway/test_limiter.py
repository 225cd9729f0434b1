"""Limiter decisions on in-process storage and on the shared Redis."""
from __future__ import annotations

import textwrap

import pytest

from gateway.ratelimit.limiter import DescriptorLimiter, RedisOrMemory, storage_for
from gateway.ratelimit.policy import load_policy
from testsupport.redis_server import PrivateRedis

CHAT = [("generic_key", "chat"), ("remote_address", "198.51.100.7")]


def limiter(backend, policy="gateway/ratelimit/policy.yaml"):
    return DescriptorLimiter(load_policy(policy), backend)


def test_thirty_chat_messages_a_minute_then_refused_with_retry_after():
    rl = limiter(storage_for("", "", 0.05))
    decisions = [rl.check(CHAT) for _ in range(35)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False] * 5
    assert all(1 <= d.retry_after_s <= 60 for d in decisions[30:])


def test_addresses_have_separate_budgets():
    rl = limiter(storage_for("", "", 0.05))
    for _ in range(30):
        rl.check(CHAT)
    assert not rl.check(CHAT).allowed
    assert rl.check([("generic_key", "chat"), ("remote_address", "198.51.100.8")]).allowed


def test_unlimited_descriptor_is_allowed():
    rl = limiter(storage_for("", "", 0.05))
    assert all(rl.check([("generic_key", "other"), ("remote_address", "x")]).allowed for _ in range(100))


def test_shadow_mode_counts_but_never_refuses(tmp_path):
    path = tmp_path / "shadow.yaml"
    path.write_text(textwrap.dedent("""\
        domain: d
        descriptors:
          - key: remote_address
            shadow_mode: true
            rate_limit: {unit: minute, requests_per_unit: 2}
    """))
    rl = limiter(storage_for("", "", 0.05), path)
    decisions = [rl.check([("remote_address", "x")]) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert decisions[-1].limit is not None  # over the limit, reported, yet allowed


@pytest.mark.redis
def test_two_limiters_on_one_redis_share_one_budget(redis_url, redis_prefix):
    first = limiter(storage_for(redis_url, redis_prefix, 0.5))
    second = limiter(storage_for(redis_url, redis_prefix, 0.5))
    allowed = sum(first.check(CHAT).allowed + second.check(CHAT).allowed for _ in range(20))
    assert allowed == 30


def test_without_redis_the_limiter_counts_the_budget_in_its_own_memory():
    backend = storage_for("redis://127.0.0.1:1/0", "x:", 0.05, retry_s=60)
    rl = limiter(backend)
    decisions = [rl.check(CHAT) for _ in range(35)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False] * 5
    assert isinstance(backend, RedisOrMemory) and backend.in_memory


def test_the_limiter_counts_in_redis_again_once_it_answers(tmp_path):
    redis = PrivateRedis(tmp_path).start()
    try:
        clock = [0.0]
        shared = storage_for(redis.url, "t:", 0.5)
        assert isinstance(shared, RedisOrMemory)
        backend = RedisOrMemory(shared.redis, retry_s=5, clock=lambda: clock[0])
        changes: list[bool] = []
        backend.on_change(changes.append)
        rl = limiter(backend)
        redis.kill()
        assert sum(rl.check(CHAT).allowed for _ in range(10)) == 10 and backend.in_memory
        redis.start()  # back, empty
        assert rl.check(CHAT).allowed and backend.in_memory  # not tried again before retry_s
        clock[0] += 5
        assert rl.check(CHAT).allowed and not backend.in_memory
        assert changes == [True, False] and len(backend.memory) == 0  # the in-memory counts are dropped
        assert sum(rl.check(CHAT).allowed for _ in range(40)) == 29  # Redis holds one hit: the one after it answered
    finally:
        redis.kill()
