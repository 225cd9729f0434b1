"""Notifier: deliveries per second to a healthy local Slack receiver, and the time to drain a 10,000-alert backlog
once an outage ends (Slack pacing off, breaker reset timeout 1 s, SQLite, one notifier process with its default
8 delivery workers). Target: the backlog drained in <= 30 s. Prints figures; asserts nothing."""
from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testsupport.notifier import NotifierProcess, slack_titles
from testsupport.receivers import HttpReceiver
from testsupport.waiting import poll

HEALTHY_ALERTS = 3000
BACKLOG = 10_000
CALLERS = 8
TIME_LIMIT_S = 120.0


def _notify_all(notifier: NotifierProcess, prefix: str, count: int) -> float:
    """Notify `count` alerts from CALLERS threads (bounded by TIME_LIMIT_S); returns the seconds it took."""
    started = time.monotonic()
    deadline = started + TIME_LIMIT_S

    def caller(index: int) -> None:
        for n in range(index, count, CALLERS):
            if time.monotonic() > deadline:
                return
            notifier.slack(f"{prefix}-{n}", f"{prefix} alert {n}")

    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    return time.monotonic() - started


def _wait_received(receiver: HttpReceiver, count: int) -> bool:
    """True once the receiver has `count` requests, False if TIME_LIMIT_S passes first."""
    return bool(poll(lambda: len(receiver.requests) >= count, TIME_LIMIT_S, interval=0.02))


def main() -> None:
    env = {"CB_RESET_TIMEOUT": "1", "DLQ_MAX_RETRIES": "20", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as data, HttpReceiver() as slack:
        notifier = NotifierProcess(Path(data), {**env, "SLACK_WEBHOOK_URL": slack.url}).start()
        try:
            started = time.monotonic()
            accept_s = _notify_all(notifier, "healthy", HEALTHY_ALERTS)
            complete = _wait_received(slack, HEALTHY_ALERTS)
            total_s = time.monotonic() - started
            print(f"notify acknowledged: {HEALTHY_ALERTS / accept_s:.0f} calls/s ({CALLERS} callers)")
            print(
                f"delivered to a healthy receiver: {len(slack.requests) / total_s:.0f} deliveries/s "
                f"({len(slack.requests)}/{HEALTHY_ALERTS} in {total_s:.1f} s, accept to receipt)"
                + ("" if complete else " INCOMPLETE")
            )

            slack.requests.clear()
            slack.fail(500)
            fill_s = _notify_all(notifier, "backlog", BACKLOG)
            poll(lambda: notifier.breaker("slack").state == "open", TIME_LIMIT_S)
            print(f"backlog of {BACKLOG} accepted during the outage in {fill_s:.1f} s; breaker open")
            outage_ended = time.monotonic()
            slack.recover()
            complete = _wait_received(slack, BACKLOG)
            drain_s = time.monotonic() - outage_ended
            titles = slack_titles(slack)
            print(
                f"backlog drained after the outage ended: {len(slack.requests)}/{BACKLOG} in {drain_s:.1f} s "
                f"({len(slack.requests) / drain_s:.0f}/s, includes up to 1 s for the breaker's trial call; "
                f"target <= 30 s), duplicates: {len(titles) - len(set(titles))}"
                + ("" if complete else " INCOMPLETE")
            )
        finally:
            notifier.stop()
