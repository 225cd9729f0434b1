"""Nothing lost, nothing doubled: a 1,000-alert outage, kill -9 mid-burst, and two replicas on one PostgreSQL."""
from __future__ import annotations

import collections
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from deploy.local.processes import free_port
from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.notifier import NotifierProcess, slack_titles
from testsupport.waiting import wait_for

BURST = 1000


def send_burst(notifier: NotifierProcess, prefix: str, count: int = BURST, callers: int = 8) -> list[str]:
    """Notify `count` alerts from several callers; returns the keys the notifier acknowledged, as they come."""
    accepted: list[str] = []

    def one(n: int) -> None:
        key = f"{prefix}-{n}"
        try:
            notifier.slack(key, f"{prefix} alert {n}")
            accepted.append(key)
        except grpc.RpcError:
            pass  # not acknowledged, so not the notifier's to deliver

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(one, range(count)))
    return accepted


def drained(notifier: NotifierProcess, at_least: int) -> bool:
    """Nothing pending and at least this many delivered (a call cut off by a kill may be stored yet unacknowledged)."""
    stats = notifier.stats()
    done = sum(c.count for c in stats.counts if c.status == pb.DELIVERED)
    return stats.pending == 0 and done >= at_least


def test_an_outage_during_a_burst_of_1000_alerts_loses_and_doubles_nothing(start_notifier, slack_receiver):
    notifier = start_notifier({"SLACK_WEBHOOK_URL": slack_receiver.url, "CB_RESET_TIMEOUT": "1",
                               "DLQ_MAX_RETRIES": "10"})
    slack_receiver.fail(500)
    accepted = send_burst(notifier, "outage")
    assert len(accepted) == BURST
    wait_for(lambda: notifier.breaker("slack").state == "open", what="the breaker to open")

    slack_receiver.recover()
    wait_for(lambda: drained(notifier, BURST), timeout=60, what="all 1,000 alerts delivered")

    per_title = collections.Counter(slack_titles(slack_receiver))
    assert len(per_title) == BURST and max(per_title.values()) == 1
    assert notifier.stats().failed == 0


def test_kill_9_in_the_middle_of_a_burst_loses_no_accepted_message(start_notifier, slack_receiver, tmp_path):
    env = {"SLACK_WEBHOOK_URL": slack_receiver.url, "DELIVERY_LEASE_S": "2", "DELIVERY_WORKERS": "4"}
    slack_receiver.hang(0.02)  # Slack slower than the callers: a backlog builds up
    first = start_notifier(env, data_dir=tmp_path / "data", name="notifier-before-kill")
    accepted: list[str] = []

    def burst() -> None:
        accepted.extend(send_burst(first, "crash", callers=1))

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(burst)
        wait_for(lambda: len(slack_receiver.requests) >= 100, what="deliveries under way")
        first.process.kill()
        delivered_at_kill = len(slack_receiver.requests)
        running.result()
    assert delivered_at_kill < len(accepted) < BURST  # killed mid-burst, with accepted messages not yet delivered

    restarted = start_notifier(env, data_dir=tmp_path / "data", name="notifier-after-kill")
    wait_for(lambda: drained(restarted, len(accepted)), timeout=60, what="every accepted alert delivered")
    delivered_titles = set(slack_titles(slack_receiver))
    assert {f"crash alert {key.split('-')[1]}" for key in accepted} <= delivered_titles


def _delivered_by(metrics_port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    match = re.search(r'notifier_attempts_total\{destination="slack",outcome="delivered"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.postgres
@pytest.mark.redis
def test_two_replicas_on_postgresql_drain_one_backlog_without_double_delivery(
    redis_url, redis_prefix, pg_url, pg_schema, start_notifier, slack_receiver, tmp_path
):
    shared = {
        "SLACK_WEBHOOK_URL": slack_receiver.url,
        "DATABASE_URL": pg_url,
        "DB_SCHEMA": pg_schema,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "CB_RESET_TIMEOUT": "1",
        "DLQ_MAX_RETRIES": "10",
    }
    ports = [free_port(), free_port()]
    replicas = [
        start_notifier({**shared, "METRICS_PORT": str(port)}, data_dir=tmp_path / f"r{i}", name=f"replica-{i}")
        for i, port in enumerate(ports)
    ]
    slack_receiver.fail(500)
    accepted = [key for i, replica in enumerate(replicas) for key in send_burst(replica, f"replica{i}", BURST // 2)]
    assert len(accepted) == BURST
    # The breaker lives in Redis: both replicas see it open.
    wait_for(lambda: all(r.breaker("slack").state == "open" for r in replicas), what="the shared breaker to open")

    slack_receiver.recover()
    wait_for(lambda: drained(replicas[0], BURST), timeout=60, what="the backlog drained")

    per_title = collections.Counter(slack_titles(slack_receiver))
    assert len(per_title) == BURST and max(per_title.values()) == 1
    by_replica = [_delivered_by(port) for port in ports]
    assert sum(by_replica) == BURST and min(by_replica) > 0  # both replicas drained, no message twice
