"""Breakers and the dead-letter queue on one notifier process: an outage opens the breaker, nothing is lost."""
from __future__ import annotations

import grpc
import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.notifier import payload, slack_titles
from testsupport.waiting import wait_for

ESCALATION = "ops@novahouse.test"


@pytest.fixture(scope="module")
def notifier(module_receivers, start_module_notifier):
    slack, monday, smtp = module_receivers
    return start_module_notifier(
        {
            "SLACK_WEBHOOK_URL": slack.url,
            "MONDAY_API_URL": monday.url,
            "SMTP_URL": smtp.url,
            "ESCALATION_EMAIL": ESCALATION,
            "CB_FAIL_MAX": "5",
            "CB_RESET_TIMEOUT": "3",
            "DLQ_MAX_RETRIES": "2",
        },
    )


@pytest.fixture(scope="module")
def slack_outage(notifier, module_receivers):
    """Slack answers 500: five alerts fail for real and open the breaker."""
    slack = module_receivers[0]
    slack.fail(500)
    for n in range(1, 6):
        notifier.slack(f"outage-{n}", f"Outage alert {n}", "Lead waiting", phone_hint="last digits 42")
    wait_for(lambda: notifier.breaker("slack").state == "open", what="the Slack breaker to open")
    return slack


def test_five_server_errors_open_the_breaker(notifier, slack_outage):
    breaker = notifier.breaker("slack")
    assert breaker.state == "open" and breaker.fail_max == 5 and breaker.reset_timeout_s == 3
    assert slack_outage.attempts == 5
    assert notifier.breaker("monday").state == "closed"


def test_enqueue_failed_alert(notifier, slack_outage):
    """Seed test: an alert that Slack refused is kept with its payload, error, attempts and next attempt time."""
    entry = notifier.delivery("outage-3")
    assert entry.status == pb.PENDING and entry.attempts == 1
    assert "HTTP 500" in entry.last_error
    assert payload(entry) == {"title": "Outage alert 3", "text": "Lead waiting",
                              "fields": {"phone_hint": "last digits 42"}}
    assert entry.next_attempt_at.ToDatetime() > entry.created_at.ToDatetime()


def test_while_open_calls_fail_fast_and_land_in_the_dlq(notifier, slack_outage):
    for n in range(6, 11):
        notifier.slack(f"outage-{n}", f"Outage alert {n}")
    wait_for(
        lambda: all("breaker is open" in notifier.delivery(f"outage-{n}").last_error for n in range(6, 11)),
        what="outage-6 to outage-10 to be refused by the breaker",
    )
    assert slack_outage.attempts == 5  # no request reached Slack
    refused = notifier.delivery("outage-8")
    assert refused.status == pb.PENDING and refused.attempts == 0  # refusals use up no retries


def test_get_pending_alerts(notifier, slack_outage):
    """Seed test: the pending alerts are listed, filtered by destination and status."""
    pending = notifier.admin.ListDeadLetters(
        pb.ListDeadLettersRequest(destination=pb.SLACK, status=pb.PENDING), timeout=10
    ).entries
    assert sorted(e.idempotency_key for e in pending) == sorted(f"outage-{n}" for n in range(1, 11))
    assert all(e.destination == pb.SLACK and e.last_error for e in pending)
    none_for_monday = notifier.admin.ListDeadLetters(
        pb.ListDeadLettersRequest(destination=pb.MONDAY, status=pb.PENDING), timeout=10
    ).entries
    assert list(none_for_monday) == []
    assert notifier.stats().pending == 10


def test_after_the_reset_timeout_a_trial_call_closes_it_and_the_queue_drains(notifier, slack_outage):
    failed_attempts = slack_outage.attempts
    slack_outage.recover()

    for n in range(1, 11):
        notifier.wait_status(f"outage-{n}", pb.DELIVERED)
    assert notifier.breaker("slack").state == "closed"
    titles = slack_titles(slack_outage)
    assert sorted(titles) == sorted(f"Outage alert {n}" for n in range(1, 11))  # each exactly once
    assert slack_outage.attempts == failed_attempts + 10
    assert notifier.stats().pending == 0


def test_exhausted_retries_fail_and_send_exactly_one_escalation_naming_the_delivery(notifier, module_receivers):
    _, monday, smtp = module_receivers
    monday.fail(500)
    notifier.monday("crm-doomed", "Lead that Monday.com never takes", {"text0": "Sopot", "email": "jan.k@example.org"})

    failed = notifier.wait_status("crm-doomed", pb.FAILED)
    assert failed.attempts == 3 and "HTTP 500" in failed.last_error  # the first attempt and DLQ_MAX_RETRIES=2
    escalation = notifier.wait_status(f"escalation:{failed.delivery_id}", pb.DELIVERED)
    assert escalation.destination == pb.EMAIL
    [email] = smtp.to(ESCALATION)
    assert "crm-doomed" in email.subject
    # It names the delivery and the error; the payload (a person's data) stays in the DLQ, out of the mailbox.
    for named in (failed.delivery_id, "monday", "crm-doomed", "Attempts: 3", "HTTP 500"):
        assert named in email.body
    for personal in ("Lead that Monday.com never takes", "Sopot", "jan.k@example.org"):
        assert personal not in email.body and personal not in email.subject
    assert monday.attempts == 3
    assert notifier.stats().failed == 1

    # Replayed once Monday.com works again: delivered, one item, and still only the one escalation email.
    monday.recover()
    replayed = notifier.admin.ReplayDeadLetters(pb.ReplayDeadLettersRequest(all_failed=True), timeout=10)
    assert replayed.replayed == 1
    delivered = notifier.wait_status("crm-doomed", pb.DELIVERED)
    assert delivered.external_id
    assert [("create_item" in r.json()["query"]) for r in monday.requests] == [False, True]  # a search, one create
    assert len(smtp.to(ESCALATION)) == 1


def test_an_operator_can_reset_an_open_breaker(notifier, module_receivers):
    slack = module_receivers[0]
    slack.fail(503, times=5)
    for n in range(5):
        notifier.slack(f"reset-{n}", f"Reset alert {n}")
    wait_for(lambda: notifier.breaker("slack").state == "open", what="the Slack breaker to open")

    reset = notifier.admin.ResetBreaker(pb.ResetBreakerRequest(name="slack"), timeout=10)
    assert reset.state == "closed" and reset.fail_counter == 0
    for n in range(5):
        notifier.wait_status(f"reset-{n}", pb.DELIVERED)

    with pytest.raises(grpc.RpcError) as error:
        notifier.admin.ResetBreaker(pb.ResetBreakerRequest(name="fax"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
