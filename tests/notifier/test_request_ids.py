"""A delivery keeps the id of the request that queued it: GetDelivery shows it, and the log lines written while
sending it (later, on a worker thread, retries and the escalation included) carry it."""
from __future__ import annotations

import json

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.waiting import wait_for

REQUEST_ID = "notify-request-0001"


def lines_about(notifier, delivery_id: str) -> list[dict]:
    """The notifier's JSON log lines that name this delivery."""
    lines = []
    for raw in notifier.process.log_path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # not one of ours
        if line.get("delivery_id") == delivery_id:
            lines.append(line)
    return lines


def notify_slack(notifier, key: str) -> pb.NotifyResponse:
    request = pb.NotifyRequest(idempotency_key=key, slack=pb.SlackAlert(title="Lead from the chat"))
    return notifier.internal.Notify(request, metadata=[("x-request-id", REQUEST_ID)], timeout=10)


def test_a_delivery_and_the_log_lines_of_its_sending_carry_the_request_id_of_its_notify(
    start_notifier, slack_receiver
):
    notifier = start_notifier({"SLACK_WEBHOOK_URL": slack_receiver.url, "LOG_LEVEL": "INFO"})
    slack_receiver.fail(503, times=1)  # the first attempt fails: its retry runs on a worker thread later

    sent = notify_slack(notifier, "traced-alert")
    delivered = notifier.wait_status("traced-alert", pb.DELIVERED)
    assert delivered.request_id == REQUEST_ID and delivered.attempts == 2

    def sent_lines() -> list[dict]:
        found = lines_about(notifier, sent.delivery_id)
        return found if any(line["msg"] == "delivered" for line in found) else []

    lines = wait_for(sent_lines, what="the delivered line")
    assert {line["msg"].split(":")[0] for line in lines} >= {"delivery will be retried", "delivered"}
    assert {line.get("request_id") for line in lines} == {REQUEST_ID}


def test_the_escalation_of_a_failed_delivery_carries_the_failed_deliverys_request_id(
    start_notifier, slack_receiver, smtp_receiver
):
    notifier = start_notifier({
        "SLACK_WEBHOOK_URL": slack_receiver.url,
        "SMTP_URL": smtp_receiver.url,
        "ESCALATION_EMAIL": "ops@example.com",
        "DLQ_MAX_RETRIES": "0",
        "LOG_LEVEL": "INFO",
    })
    slack_receiver.fail(500)

    failed = notify_slack(notifier, "lost-alert")
    notifier.wait_status("lost-alert", pb.FAILED)
    escalation = notifier.wait_status(f"escalation:{failed.delivery_id}", pb.DELIVERED)
    assert escalation.request_id == REQUEST_ID

    lines = wait_for(lambda: lines_about(notifier, escalation.delivery_id), what="the escalation's lines")
    assert [line.get("request_id") for line in lines] == [REQUEST_ID]
