"""A rolling restart drops no request (issue 17, part 1): two chat replicas behind the local Envoy, which health-checks
them with the gRPC health protocol, under a steady 50 requests/s; each replica in turn gets SIGTERM (it reports
NOT_SERVING and keeps serving DRAIN_DELAY_S, then stops) and a replacement starts on the same address. And a
replica that reports NOT_SERVING is sent nothing while the other serves."""
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
from testsupport.stack import Gateway, running_stack
from testsupport.waiting import wait_for

RATE = 50  # requests per second
DRAIN = {"DRAIN_DELAY_S": "3", "SHUTDOWN_GRACE_S": "5"}
UNLIMITED = {"LOCAL_RATE_LIMIT_DISABLED": "true", "GLOBAL_RATE_LIMIT_DISABLED": "true"}


def chat_hosts(gw: Gateway) -> dict[str, dict[str, str]]:
    """Envoy's view of the chat cluster's hosts: address -> {rq_total, health_flags, ...}."""
    text = requests.get(f"http://127.0.0.1:{gw.stack.config.envoy_admin_port}/clusters", timeout=5).text
    hosts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = re.match(r"^chat::(127\.0\.0\.1:\d+)::(\w+)::(.*)$", line)
        if match:
            hosts.setdefault(match[1], {})[match[2]] = match[3]
    return hosts


def healthy(gw: Gateway, address: str) -> bool:
    return chat_hosts(gw).get(address, {}).get("health_flags") == "healthy"


def flowing(load: SteadyLoad, beyond: int) -> bool:
    return len(load.results) > beyond


def conversation(gw: Gateway) -> tuple[str, dict[str, str]]:
    first = gw.rest("POST", "/api/chatbot/chat", json={"message": "Dzień dobry"})
    assert first.status_code == 200, first.text
    body = first.json()
    return f"/api/chatbot/conversations/{body['session_id']}", {"x-session-secret": body["session_secret"]}


class SteadyLoad:
    """GETs of one transcript at RATE per second, each on its own (a slow answer does not slow the rate)."""

    def __init__(self, gw: Gateway, path: str, headers: dict[str, str]):
        self.url = gw.public_url + path
        self.headers = headers
        self.results: list[int | str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        try:
            self.results.append(requests.get(self.url, headers=self.headers, timeout=10).status_code)
        except requests.RequestException as exc:
            self.results.append(type(exc).__name__)

    def _run(self) -> None:
        start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            self._pool.submit(self._one)
            sent += 1
            self._stop.wait(max(0.0, start + sent / RATE - time.monotonic()))

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)


def test_a_rolling_restart_of_the_chat_replicas_under_steady_load_fails_no_request(tmp_path):
    with running_stack(tmp_path, env=UNLIMITED, service_env={"chat": DRAIN}, chat_replicas=2) as gw:
        stack = gw.stack
        addresses = stack.config.chat_addrs()
        wait_for(lambda: all(healthy(gw, a) for a in addresses), timeout=30, what="both chat replicas healthy")
        path, headers = conversation(gw)

        with SteadyLoad(gw, path, headers) as load:
            for name, address in (("chat", addresses[0]), ("chat-2", addresses[1])):
                served_before = len(load.results)
                stack.processes[name].stop(grace=30)  # SIGTERM; returns once it exited
                assert stack.processes[name].proc.returncode == 0  # type: ignore[union-attr]
                if name == "chat":
                    stack.start_service("chat")
                else:
                    stack.start_chat_replica(2)
                assert grpc_serving(address)
                wait_for(functools.partial(healthy, gw, address), timeout=30, what=f"{name}'s replacement healthy")
                wait_for(functools.partial(flowing, load, served_before + RATE), timeout=30, what="load flowing")

        failed = [r for r in load.results if r != 200]
        print(f"rolling restart of 2 chat replicas at {RATE}/s: {len(load.results)} requests, {len(failed)} failed")
        assert len(load.results) >= 4 * RATE
        assert failed == [], f"{len(failed)} of {len(load.results)} failed: {sorted(set(map(str, failed)))}"


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
        before = {a: int(chat_hosts(gw)[a]["rq_total"]) for a in (draining, serving)}

        answers = [gw.rest("GET", path, headers=headers).status_code for _ in range(RATE)]

        after = {a: int(chat_hosts(gw)[a]["rq_total"]) for a in (draining, serving)}
        assert answers == [200] * RATE
        assert after[draining] == before[draining], chat_hosts(gw)
        assert after[serving] - before[serving] >= RATE
