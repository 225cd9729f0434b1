"""A rolling restart drops no request (issue 17, part 1): two replicas of every service behind the local Envoy, which
health-checks them with the gRPC health protocol, under a steady 50 requests/s; each replica in turn gets SIGTERM (it
reports NOT_SERVING and keeps serving DRAIN_DELAY_S, then stops) and a replacement starts on the same address. A
replica that reports NOT_SERVING is sent nothing while the other serves, and a request Envoy could not deliver to a
replica that refuses connections is sent to the other (the routes' retry policy)."""
from __future__ import annotations

import functools
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from deploy.local.processes import grpc_serving
from testsupport import backing
from testsupport.stack import Gateway, postgres_platform, running_stack
from testsupport.waiting import wait_for

RATE = 50  # requests per second
DRAIN = {"DRAIN_DELAY_S": "3", "SHUTDOWN_GRACE_S": "5"}
UNLIMITED = {"LOCAL_RATE_LIMIT_DISABLED": "true", "GLOBAL_RATE_LIMIT_DISABLED": "true"}


def cluster_hosts(gw: Gateway, cluster: str = "chat") -> dict[str, dict[str, str]]:
    """Envoy's view of a cluster's hosts: address -> {rq_total, health_flags, ...}."""
    text = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/clusters", timeout=5).text
    hosts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = re.match(rf"^{cluster}::(127\.0\.0\.1:\d+)::(\w+)::(.*)$", line)
        if match:
            hosts.setdefault(match[1], {})[match[2]] = match[3]
    return hosts


def chat_hosts(gw: Gateway) -> dict[str, dict[str, str]]:
    return cluster_hosts(gw, "chat")


def healthy(gw: Gateway, address: str, cluster: str = "chat") -> bool:
    return cluster_hosts(gw, cluster).get(address, {}).get("health_flags") == "healthy"


def routed_away(gw: Gateway, path: str, headers: dict[str, str], address: str) -> bool:
    """Four calls in a row (two of them this replica's turns in the round robin) reached none of this replica."""
    before = int(chat_hosts(gw)[address]["rq_total"])
    for _ in range(4):
        assert gw.rest("GET", path, headers=headers).status_code == 200
    return int(chat_hosts(gw)[address]["rq_total"]) == before


def all_healthy(gw: Gateway, cluster: str) -> bool:
    return all(healthy(gw, address, cluster) for address in gw.stack.config.addrs(cluster))


def counter(gw: Gateway, name: str) -> int:
    text = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/stats?filter=^{re.escape(name)}$",
                        timeout=5).text
    return int(text.split(":")[1]) if ":" in text else 0


def flowing(load: PacedLoad, beyond: int) -> bool:
    return len(load.results) > beyond


def conversation(gw: Gateway) -> tuple[str, dict[str, str]]:
    first = gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"})
    assert first.status_code == 200, first.text
    body = first.json()
    return f"/api/chatbot/conversations/{body['session_id']}", {"x-session-secret": body["session_secret"]}


class PacedLoad:
    """RATE requests per second, taking `calls` in turn, each request on its own thread (a slow answer does not slow
    the rate); a call is (service it reaches, method, URL, JSON body, headers)."""

    def __init__(self, calls: list[tuple[str, str, str, dict[str, str] | None, dict[str, str] | None]]):
        self.calls = calls
        self.results: list[tuple[str, int | str]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=48)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, index: int) -> None:
        service, method, url, body, headers = self.calls[index % len(self.calls)]
        try:
            outcome: int | str = requests.request(method, url, json=body, headers=headers, timeout=20).status_code
        except requests.RequestException as exc:
            outcome = type(exc).__name__
        self.results.append((service, outcome))

    def _run(self) -> None:
        start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            self._pool.submit(self._one, sent)
            sent += 1
            self._stop.wait(max(0.0, start + sent / RATE - time.monotonic()))

    def failed(self) -> list[int | str]:
        return [outcome for _, outcome in list(self.results) if outcome != 200]

    def by_service(self) -> dict[str, tuple[int, int]]:
        """service -> (failed, total)."""
        tally: dict[str, tuple[int, int]] = {}
        for service, outcome in list(self.results):
            failed, total = tally.get(service, (0, 0))
            tally[service] = (failed + (outcome != 200), total + 1)
        return tally

    def __enter__(self) -> PacedLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)


def mixed_calls(gw: Gateway) -> list[tuple[str, str, str, dict[str, str] | None, dict[str, str] | None]]:
    """Routes that reach each service: a visitor's first message (chat SendMessage), a consent status lookup
    (consent), both on the public listener and so through the rate-limit service, and the DLQ's numbers on the admin
    listener (notifier)."""
    return [
        ("chat", "POST", gw.public_url + "/api/chatbot/chat", {"message": "Dzień dobry"}, None),
        ("consent", "GET", gw.public_url + "/api/unsubscribe/status/rolling%40example.com", None, None),
        ("notifier", "GET", gw.admin_url + "/api/dlq/stats", None, None),
    ]


def test_a_replica_reporting_not_serving_is_sent_nothing(tmp_path):
    drain_long = {"DRAIN_DELAY_S": "60", "SHUTDOWN_GRACE_S": "1"}
    with running_stack(tmp_path, env=UNLIMITED, service_env={"chat": drain_long}, chat_replicas=2) as gw:
        stack = gw.stack
        draining, serving = stack.config.chat_addrs()
        wait_for(lambda: all(healthy(gw, a) for a in (draining, serving)), timeout=30, what="both healthy")
        path, headers = conversation(gw)

        os.killpg(stack.processes["chat"].proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        wait_for(lambda: "failed_active_hc" in chat_hosts(gw)[draining].get("health_flags", ""), timeout=10,
                 what="Envoy to see the draining replica NOT_SERVING")
        assert grpc_serving(draining) is False  # it reports NOT_SERVING (and keeps answering for the drain delay)
        # Envoy's workers act on the health check a moment after its admin page shows it (up to about a second
        # on this machine; the drain delay covers it)
        wait_for(functools.partial(routed_away, gw, path, headers, draining), timeout=10,
                 what="Envoy to stop routing to the draining replica")
        before = {a: int(chat_hosts(gw)[a]["rq_total"]) for a in (draining, serving)}

        answers = [gw.rest("GET", path, headers=headers).status_code for _ in range(RATE)]

        after = {a: int(chat_hosts(gw)[a]["rq_total"]) for a in (draining, serving)}
        assert answers == [200] * RATE
        assert after[draining] == before[draining], chat_hosts(gw)
        assert after[serving] - before[serving] >= RATE


def test_a_rolling_restart_of_every_service_under_steady_load_fails_no_request(tmp_path):
    """Two servers each of chat, consent, the notifier and the rate-limit service (consent's and the notifier's on
    one PostgreSQL schema each, the limiter's counts in Redis), each restarted in turn under 50 requests/s."""
    prefix = f"{backing.unique_name('rolling')}:"
    limiter = {**DRAIN, "REDIS_URL": backing.TEST_REDIS_URL, "REDIS_KEY_PREFIX": prefix}
    service_env = {"chat": DRAIN, "consent": DRAIN, "notifier": DRAIN, "ratelimit": limiter}
    try:
        with postgres_platform(tmp_path, "rolling", service_env=service_env, chat_replicas=2,
                               replicas={"consent": 2, "notifier": 2, "ratelimit": 2}) as platform:
            gw = platform.gw
            stack = gw.stack
            services = ("ratelimit", "consent", "notifier", "chat")
            for service in services:
                wait_for(functools.partial(all_healthy, gw, service), timeout=30,
                         what=f"both {service} servers healthy")

            with PacedLoad(mixed_calls(gw)) as load:
                wait_for(lambda: len(load.results) > RATE, timeout=30, what="load flowing")
                for service in services:
                    for number, address in enumerate(stack.config.addrs(service), start=1):
                        name = service if number == 1 else f"{service}-{number}"
                        served_before = len(load.results)
                        stack.processes[name].stop(grace=30)  # SIGTERM; returns once it exited
                        assert stack.processes[name].proc.returncode == 0, name  # type: ignore[union-attr]
                        if number == 1:
                            stack.start_service(service)
                        else:
                            stack.start_replica(service, number)
                        wait_for(functools.partial(healthy, gw, address, service), timeout=30,
                                 what=f"{name}'s replacement healthy")
                        wait_for(functools.partial(flowing, load, served_before + RATE), timeout=30,
                                 what="load flowing")

            tally = load.by_service()
            figures = ", ".join(f"{service} {failed} failed of {total}"
                                for service, (failed, total) in sorted(tally.items()))
            print(f"rolling restart of 2 servers each at {RATE}/s: {figures}")
            # the limiter answers for every public request: chat's and consent's
            print(f"through the limiter: {tally['chat'][1] + tally['consent'][1]} requests")
            failed = load.failed()
            assert set(tally) == {"chat", "consent", "notifier"}
            assert all(total >= 8 * RATE // 3 for _, total in tally.values()), tally
            assert failed == [], f"{tally}: {sorted(set(map(str, failed)))}"
    finally:
        backing.delete_prefix(prefix)


def test_a_request_to_a_replica_refusing_connections_is_retried_on_the_other(tmp_path):
    """One of two chat replicas is killed outright: until Envoy's health checks notice, the replica's turn in the
    round robin meets a refused connection, and the route's retry policy sends the visitor's message (not yet
    delivered anywhere, so safe to send again) to the other replica."""
    with running_stack(tmp_path, env=UNLIMITED, chat_replicas=2) as gw:
        stack = gw.stack
        alive, dead = stack.config.chat_addrs()
        wait_for(lambda: all(healthy(gw, a) for a in (alive, dead)), timeout=30, what="both chat replicas healthy")
        for _ in range(4):  # a connection to each replica in Envoy's pool
            assert gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"}).status_code == 200
        refused_before = counter(gw, "cluster.chat.upstream_cx_connect_fail")
        retried_before = counter(gw, "cluster.chat.upstream_rq_retry")

        os.killpg(stack.processes["chat-2"].proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        stack.processes["chat-2"].proc.wait(timeout=10)  # type: ignore[union-attr]
        answers = [gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"}).status_code
                   for _ in range(6)]

        assert answers == [200] * 6
        assert counter(gw, "cluster.chat.upstream_cx_connect_fail") > refused_before  # the dead one was tried
        assert counter(gw, "cluster.chat.upstream_rq_retry") > retried_before  # and the message sent again
