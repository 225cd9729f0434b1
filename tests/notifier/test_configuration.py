"""Configuration edge cases on one notifier: Slack pacing, a destination left unconfigured, an unreachable SMTP
server. None of them takes the notifier out of SERVING or loses a message."""
from __future__ import annotations

import itertools
import time

import pytest

from deploy.local.processes import free_port, grpc_serving
from novahouse.common.v1 import diagnostics_pb2
from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.receivers import HttpReceiver
from testsupport.waiting import wait_for

PACING_S = 0.3


@pytest.fixture(scope="module")
def arrivals():
    """A fake Slack that notes when each alert arrived."""
    times: list[float] = []

    def respond(_received, _count):
        times.append(time.monotonic())
        return 200, {"ok": True}

    with HttpReceiver(respond=respond) as slack:
        yield slack, times


@pytest.fixture(scope="module")
def notifier(arrivals, start_module_notifier):
    slack, _ = arrivals
    return start_module_notifier(
        {
            "SLACK_WEBHOOK_URL": slack.url,
            "SLACK_MIN_INTERVAL_S": str(PACING_S),
            "MONDAY_API_KEY": "",
            "SMTP_URL": f"smtp://127.0.0.1:{free_port()}",  # nothing listens there
            "DLQ_MAX_RETRIES": "50",
        },
    )


def test_slack_alerts_are_paced_to_the_configured_interval(notifier, arrivals):
    _, times = arrivals
    for n in range(4):
        notifier.slack(f"paced-{n}", f"Paced alert {n}")
    for n in range(4):
        notifier.wait_status(f"paced-{n}", pb.DELIVERED)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 4 and min(gaps) >= PACING_S * 0.8


def test_an_unconfigured_destination_keeps_the_message_pending_with_the_reason(notifier):
    notifier.monday("crm-no-config", "Lead waiting for Monday.com credentials")
    waiting = wait_for(
        lambda: (d := notifier.delivery("crm-no-config")).last_error and d, what="a first attempt"
    )
    assert waiting.status == pb.PENDING
    assert "MONDAY_API_KEY and MONDAY_BOARD_ID must be set" in waiting.last_error
    assert notifier.breaker("monday").state == "closed"  # configuration is not the destination's fault


def test_an_unreachable_smtp_server_leaves_the_notifier_serving(notifier):
    notifier.email("followup-down", "anna@example.com", "Wycena", "Treść")
    waiting = wait_for(lambda: (d := notifier.delivery("followup-down")).last_error and d, what="a first attempt")
    assert waiting.status == pb.PENDING and "SMTP unreachable" in waiting.last_error
    assert grpc_serving(notifier.addr)
    report = notifier.admin.Diagnose(diagnostics_pb2.DiagnoseRequest(), timeout=10)
    assert {c.name: c.ok for c in report.checks}["database"] is True
