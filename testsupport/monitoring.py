"""The local stack with every /metrics endpoint on, a real Prometheus scraping it, and visitors' traffic: what the
dashboards' queries are checked against (tests/monitoring) and rendered from (python -m deploy.monitoring.render).

The stack runs on its embedded defaults (SQLite, in-process limiter) with Slack at a local receiver and a Monday.com
that answers 500 for the first half of the traffic, so the delivery panels show deliveries, retries, a breaker that
opens and closes again, and the queue that builds up and drains.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.processes import free_port
from testsupport.prometheus import Prometheus, running_prometheus
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.stack import Gateway, post_from, running_stack, sales_env

SERVICES = ("chat", "consent", "notifier", "ratelimit")
NAMES = ("Jan Nowak", "Anna Kowalska", "Piotr Wiśniewski", "Maria Wójcik", "Tomasz Lis", "Ewa Zielińska")
CHAT = "/api/chatbot/chat"


@dataclass
class MonitoredStack:
    gw: Gateway
    prometheus: Prometheus
    metrics: dict[str, str]  # job -> host:port of its /metrics (the services and Envoy)
    slack: HttpReceiver
    monday: HttpReceiver
    personal: set[str] = field(default_factory=set)  # emails, phones and session ids the traffic used


@contextlib.contextmanager
def monitored_stack(data_dir: Path) -> Iterator[MonitoredStack]:
    ports = {job: free_port() for job in (*SERVICES, "envoy")}
    metrics = {job: f"127.0.0.1:{port}" for job, port in ports.items()}
    service_env = {svc: {"METRICS_PORT": str(ports[svc])} for svc in SERVICES}
    service_env["envoy"] = {"ENVOY_METRICS_PORT": str(ports["envoy"])}
    with HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday:
        monday.fail(500)  # Monday.com is down until traffic() brings it back: retries, then its breaker opens
        env = {
            **sales_env(slack, monday),
            "CONSENT_CHECKPOINT_INTERVAL_S": "2",  # the ledger is verified and its size reported every 2 s
            "FOLLOWUP_INTERVAL_MINUTES": "0.05",  # a follow-up run every 3 s
            "LEAD_RETRY_SECONDS": "1",  # a visitor gone quiet mid-questions for a second is handed over, partial
            "LEAD_IDLE_MINUTES": "0.02",
            "DLQ_RETRY_DELAY_SECONDS": "1",
            "DLQ_POLL_INTERVAL_S": "1",
            "CB_RESET_TIMEOUT": "5",  # an open breaker tries again after 5 s
        }
        with running_stack(data_dir, env=env, service_env=service_env) as gw, running_prometheus(metrics) as prom:
            prom.wait_for_scrapes(2)  # the traffic's first requests are seen
            yield MonitoredStack(gw, prom, metrics, slack, monday)


def _post(ip: str, port: int, path: str, body: dict) -> tuple[int, dict]:
    status, _headers, payload = post_from(ip, port, path, body)
    try:
        return status, json.loads(payload or b"{}")
    except ValueError:
        return status, {}


def visitors(stack: MonitoredStack, round_no: int, count: int = 4) -> None:
    """One round of traffic: `count` visitors who leave their details (every other one answers every question, a
    complete lead; the others leave before the budget, a partial one), one who asks for a person, unsubscribes (one
    with a malformed address: a 400), and one address that floods the chat route past its limit (429s)."""
    port = stack.gw.stack.config.public_port
    for i in range(count):
        n = round_no * 10 + i
        ip = f"127.0.{10 + round_no}.{10 + i}"
        email, phone = f"visitor{n}@example.com", f"600 700 {n:03d}"
        _status, reply = _post(ip, port, CHAT, {"message": "Dzień dobry, ile kosztuje wykończenie mieszkania?"})
        session = reply.get("session_id", "")
        answers = [f"{NAMES[n % len(NAMES)]}, {email}, {phone}, Warszawa, 85 m2"]
        if i % 2 == 0:
            answers += ["Budżet 250 tys. zł", "Chcemy zacząć od zaraz"]
        for text in answers:
            _post(ip, port, CHAT, {"session_id": session, "message": text})
        _post(ip, port, CHAT, {"session_id": session, "message": "", "processing_consent": True,
                               "marketing_consent": True})
        stack.personal.update({email, phone.replace(" ", ""), session})
    ip = f"127.0.{10 + round_no}.200"
    _status, reply = _post(ip, port, CHAT, {"message": "Chcę rozmawiać z człowiekiem, nie z botem"})
    stack.personal.add(reply.get("session_id", ""))
    for n in range(3):
        _post(ip, port, "/api/unsubscribe", {"email": f"visitor{round_no * 10 + n}@example.com", "reason": "test"})
    _post(ip, port, "/api/unsubscribe", {"email": "not an address"})
    flood = f"127.0.{10 + round_no}.250"
    for _ in range(40):
        _post(flood, port, CHAT, {"message": "Dzień dobry"})
    stack.personal.discard("")


def traffic(stack: MonitoredStack, rounds: int = 3) -> None:
    """`rounds` rounds of visitors, each scraped twice at least, until every lead of them is handed over; Monday.com
    answers again from the middle round on."""
    for round_no in range(rounds):
        if round_no == rounds // 2:
            stack.monday.recover()
        visitors(stack, round_no)
        stack.prometheus.wait_for_scrapes(stack.prometheus.scrapes_of_every_target() + 2)
    stack.prometheus.wait_for(f"sum(chat_leads_total) >= {rounds * 4}")
