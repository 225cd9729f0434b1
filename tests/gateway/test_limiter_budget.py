"""The per-address budget holds through the real Envoy with the shipped defaults: under saturation (12 addresses,
3 threads each, 10 s of chat on PostgreSQL and Redis) and with Redis gone (the limiter counts in its own memory).
"""
from __future__ import annotations

import collections
import re
import threading
import time

import pytest
import requests
from grpc_health.v1 import health_pb2

from deploy.local.processes import free_port
from gateway.ratelimit.server import SHARED_BUDGET_HEALTH
from testsupport.probes import health_status
from testsupport.redis_server import PrivateRedis
from testsupport.stack import extra_gateway, post_from, postgres_platform, running_stack
from testsupport.waiting import wait_for

CHAT = "/api/chatbot/chat"
# Empty values give the shipped defaults back (the platform under test is otherwise unlimited for other tests'
# traffic): the policy file's 30 chat messages a minute, Envoy's shield, RATELIMIT_TIMEOUT_MS, the fail mode.
SHIPPED_LIMITS = {"CHAT_RATE_LIMIT": "", "API_RATE_LIMIT_MINUTE": "", "API_RATE_LIMIT_HOUR": "",
                  "SHIELD_BURST": "", "SHIELD_PER_SECOND": "", "RATELIMIT_TIMEOUT_MS": "",
                  "RATELIMIT_FAIL_CLOSED": ""}
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
ADDRESSES = [f"127.0.0.{100 + i}" for i in range(12)]
THREADS_PER_ADDRESS = 3
SECONDS = 10


def envoy_stats(admin_port: int, pattern: str) -> str:
    return requests.get(f"http://127.0.0.1:{admin_port}/stats?filter={pattern}", timeout=10).text


def counter(stats: str, name: str) -> int:
    match = re.search(rf"^{re.escape(name)}: (\d+)$", stats, re.M)
    return int(match.group(1)) if match else 0


def limiter_wait_ms(admin_port: int) -> dict[str, str]:
    """The limiter's quantiles as Envoy waited for it (cluster.ratelimit.upstream_rq_time, cumulative), in ms."""
    text = envoy_stats(admin_port, "^cluster.ratelimit.upstream_rq_time$")
    return {q: v for q, _, v in re.findall(r"(P\d+(?:\.\d+)?)\(([^,]+),([^)]+)\)", text)}


def saturate(port: int) -> dict[str, collections.Counter[int]]:
    """Every address's threads send chat messages back to back for SECONDS; the statuses per address."""
    statuses: dict[str, collections.Counter[int]] = {ip: collections.Counter() for ip in ADDRESSES}
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def visitor(ip: str) -> None:
        while time.monotonic() < deadline:
            try:
                status = post_from(ip, port, CHAT, {"message": "Ile kosztuje remont łazienki?"})[0]
            except OSError:
                status = -1  # a reset or a hang: counted, and fails the test below
            with lock:
                statuses[ip][status] += 1

    threads = [threading.Thread(target=visitor, args=(ip,)) for ip in ADDRESSES for _ in range(THREADS_PER_ADDRESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.redis
def test_no_address_gets_more_than_its_budget_under_saturation(tmp_path, redis_url, redis_prefix):
    shared = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": redis_prefix}
    with postgres_platform(tmp_path / "stack", "budget", service_env={"chat": shared}) as platform, \
            extra_gateway(platform.gw, tmp_path / "edge", env={**SHIPPED_LIMITS, **shared}) as edge:
        statuses = saturate(edge.stack.config.public_port)
        admin = edge.stack.config.envoy_admin_port
        stats = envoy_stats(admin, r"^cluster\.chat\.ratelimit\.")
        wait = limiter_wait_ms(admin)
    granted = {ip: counts[200] for ip, counts in statuses.items()}
    totals: collections.Counter[int] = collections.Counter()
    for counts in statuses.values():
        totals.update(counts)
    print(f"\ngranted per address: {sorted(granted.values())}; all answers: {dict(totals)}; "
          f"limiter p50/p99/p100 {wait.get('P50')}/{wait.get('P99')}/{wait.get('P100')} ms; "
          f"Envoy: ok {counter(stats, 'cluster.chat.ratelimit.ok')}, "
          f"over_limit {counter(stats, 'cluster.chat.ratelimit.over_limit')}, "
          f"error {counter(stats, 'cluster.chat.ratelimit.error')}, "
          f"failure_mode_allowed {counter(stats, 'cluster.chat.ratelimit.failure_mode_allowed')}")
    assert max(granted.values()) <= 30, granted
    assert all(counts[429] > 0 for counts in statuses.values()), "every address went past its budget"
    assert counter(stats, "cluster.chat.ratelimit.failure_mode_allowed") == 0
    assert set(totals) <= {200, 429, 503}, totals  # 503: the limiter did not answer in time (fail closed)


def metric(port: int, name: str) -> str:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return match.group(1) if match else ""


def test_with_redis_gone_one_replica_keeps_the_budget_in_its_memory(tmp_path):
    redis = PrivateRedis(tmp_path).start()
    metrics_port = free_port()
    env = {**SHIPPED_LIMITS, "REDIS_URL": redis.url, "HEALTH_CHECK_INTERVAL_S": "0.2"}
    try:
        with running_stack(tmp_path / "stack", env=env,
                           service_env={"ratelimit": {"METRICS_PORT": str(metrics_port)}}) as gw:
            port = gw.stack.config.public_port
            limiter_port = gw.stack.config.ports["ratelimit"]
            assert health_status(limiter_port, SHARED_BUDGET_HEALTH) == SERVING
            assert metric(metrics_port, "ratelimit_counting_in_memory") == "0.0"

            redis.kill()
            statuses = [post_from("127.0.0.60", port, CHAT, {"message": "Dzień dobry"})[0] for _ in range(35)]
            counting_alone = (health_status(limiter_port, SHARED_BUDGET_HEALTH),
                              metric(metrics_port, "ratelimit_counting_in_memory"))
            another_address = post_from("127.0.0.61", port, CHAT, {"message": "Dzień dobry"})[0]

            redis.start()  # back empty, as the platform's Redis keeps no persistence
            wait_for(lambda: health_status(limiter_port, SHARED_BUDGET_HEALTH) == SERVING, 30,
                     "the limiter to count in Redis again")
            refused_before = post_from("127.0.0.60", port, CHAT, {"message": "Dzień dobry"})[0]
            counted_in_redis = [post_from("127.0.0.61", port, CHAT, {"message": "Dzień dobry"})[0] for _ in range(31)]
            in_memory_after = metric(metrics_port, "ratelimit_counting_in_memory")
            log = gw.stack.processes["ratelimit"].log_path.read_text()
    finally:
        redis.kill()
    assert statuses == [200] * 30 + [429] * 5
    assert counting_alone == (NOT_SERVING, "1.0")
    assert another_address == 200
    assert in_memory_after == "0.0"
    # An address refused during the outage stays refused until its window frees a slot (the limiter's own cache of
    # refusals); the other counts made in memory are dropped, and Redis came back empty: a fresh budget of 30.
    assert refused_before == 429
    assert counted_in_redis == [200] * 30 + [429]
    assert "counting in this replica's memory" in log and "in-memory counts are dropped" in log
    assert "127.0.0.60" not in log
