"""Notify end to end on one notifier process: Slack, Monday.com and email arrive, once per idempotency key."""
from __future__ import annotations

import json

import grpc
import pytest

from novahouse.common.v1 import diagnostics_pb2
from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.notifier import monday_variables, slack_titles
from testsupport.waiting import wait_for

ESCALATION = "ops@novahouse.test"


@pytest.fixture(scope="module")
def notifier(module_receivers, start_module_notifier):
    slack, monday, smtp = module_receivers
    return start_module_notifier(
        {
            "SLACK_WEBHOOK_URL": f"{slack.url}/services/T000/B000/XXX",
            "MONDAY_API_URL": f"{monday.url}/v2",
            "SMTP_URL": smtp.url,
            "SMTP_FROM": "bot@novahouse.test",
            "ESCALATION_EMAIL": ESCALATION,
        },
    )


def test_a_slack_alert_arrives_as_blocks_once(notifier, module_receivers):
    slack = module_receivers[0]
    first = notifier.slack("lead-1001", "Nowy lead: 87 pkt", "Klient pyta o dom 120 m2", budget="900k", city="Gdańsk")
    assert not first.duplicate and first.delivery_id

    delivered = notifier.wait_status("lead-1001", pb.DELIVERED)
    assert delivered.attempts == 1 and delivered.delivered_at.seconds > 0
    [request] = [r for r in slack.requests if "Nowy lead: 87 pkt" in r.body.decode()]
    body = request.json()
    assert request.path == "/services/T000/B000/XXX"
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Nowy lead: 87 pkt"}}
    assert body["blocks"][1]["text"]["text"] == "Klient pyta o dom 120 m2"
    assert {f["text"] for f in body["blocks"][2]["fields"]} == {"*budget*\n900k", "*city*\nGdańsk"}
    assert body["text"].startswith("Nowy lead: 87 pkt")


def test_the_same_key_twice_is_one_delivery_and_answers_the_first_result(notifier, module_receivers):
    slack = module_receivers[0]
    first = notifier.slack("lead-dup", "Duplicate check")
    notifier.wait_status("lead-dup", pb.DELIVERED)
    second = notifier.slack("lead-dup", "Duplicate check, sent again by a retrying caller")

    assert second.duplicate and second.delivery_id == first.delivery_id and second.status == pb.DELIVERED
    assert slack_titles(slack).count("Duplicate check") == 1
    assert "Duplicate check, sent again by a retrying caller" not in slack_titles(slack)


def test_a_monday_item_is_created_with_its_columns_and_its_id_is_kept(notifier, module_receivers):
    monday = module_receivers[1]
    columns = {"status": '{"label": "Nowy"}', "text0": "Gdańsk", "numbers": "87"}
    notifier.monday("crm-lead-1001", "Jan K. - dom 120 m2", columns)

    delivered = notifier.wait_status("crm-lead-1001", pb.DELIVERED)
    [variables] = [v for v in monday_variables(monday) if v.get("name") == "Jan K. - dom 120 m2"]
    assert variables["board"] == "4242"
    assert json.loads(variables["columns"]) == {"status": {"label": "Nowy"}, "text0": "Gdańsk", "numbers": "87",
                                                "text_lead_id": "crm-lead-1001"}  # no lookup key: the delivery's
    request = next(r for r in monday.requests if b"Jan K." in r.body)
    assert "create_item" in request.json()["query"] and request.headers["authorization"] == "test-key"
    assert delivered.external_id.isdigit()

    again = notifier.monday("crm-lead-1001", "Jan K. - dom 120 m2", columns)
    assert again.duplicate and again.external_id == delivered.external_id
    assert [v.get("name") for v in monday_variables(monday)].count("Jan K. - dom 120 m2") == 1


def test_a_429_with_retry_after_is_waited_out_and_makes_one_item(notifier, module_receivers):
    monday = module_receivers[1]
    attempts_before = monday.attempts
    monday.rate_limit(1, times=1)
    notifier.monday("crm-429", "Rate limited lead")

    delivered = notifier.wait_status("crm-429", pb.DELIVERED)
    assert delivered.attempts == 2
    assert monday.attempts - attempts_before == 3  # the refused search, then the search and the create
    assert [v.get("name") for v in monday_variables(monday)].count("Rate limited lead") == 1


def test_a_follow_up_email_arrives_over_smtp(notifier, module_receivers):
    smtp = module_receivers[2]
    notifier.email("followup-77-1", "anna@example.com", "Twoja wycena domu", "Dzień dobry,\nprzesyłamy wycenę.")

    notifier.wait_status("followup-77-1", pb.DELIVERED)
    [message] = smtp.to("anna@example.com")
    assert message.subject == "Twoja wycena domu"
    assert "przesyłamy wycenę" in message.body
    assert "bot@novahouse.test" in message.mail_from


def test_an_email_carries_its_extra_headers_and_only_marketing_asks_consent(notifier, module_receivers):
    """No consent service runs beside this notifier: a service email goes out at once, with its headers."""
    smtp = module_receivers[2]
    headers = {"List-Unsubscribe": "<https://novahouse.example/u?token=t>", "X-Campaign": "none"}
    email = pb.Email(to="marek@example.com", subject="Your estimate", body="As you asked.", headers=headers)
    notifier.internal.Notify(
        pb.NotifyRequest(idempotency_key="service-1", email=email, purpose=pb.PURPOSE_SERVICE), timeout=10
    )

    sent = notifier.wait_status("service-1", pb.DELIVERED)
    assert sent.purpose == pb.PURPOSE_SERVICE and sent.attempts == 1
    [message] = smtp.to("marek@example.com")
    assert {name: str(message.message[name]) for name in headers} == headers


def test_a_permanent_4xx_is_dead_after_one_attempt_with_its_reason(notifier, module_receivers):
    slack = module_receivers[0]
    attempts_before = slack.attempts
    slack.fail(404, times=1)
    notifier.slack("lead-404", "Webhook removed")

    dead = notifier.wait_status("lead-404", pb.DEAD)
    assert dead.attempts == 1 and "404" in dead.last_error
    # A later alert goes through while the dead one stays dead: one request for it, no retry storm.
    notifier.slack("lead-after-404", "Next alert")
    notifier.wait_status("lead-after-404", pb.DELIVERED)
    assert slack.attempts - attempts_before == 2
    assert notifier.delivery("lead-404").attempts == 1
    assert notifier.breaker("slack").state == "closed"


@pytest.mark.parametrize(
    "request_, complaint",
    [
        (pb.NotifyRequest(slack=pb.SlackAlert(title="no key")), "idempotency_key"),
        (pb.NotifyRequest(idempotency_key="has space", slack=pb.SlackAlert(title="x")), "idempotency_key"),
        (pb.NotifyRequest(idempotency_key="no-payload"), "payload"),
        (pb.NotifyRequest(idempotency_key="empty-alert", slack=pb.SlackAlert()), "title or a text"),
        (pb.NotifyRequest(idempotency_key="no-item-name", monday=pb.MondayItem()), "item_name"),
        (pb.NotifyRequest(idempotency_key="bad-to", email=pb.Email(to="not-an-address", subject="s", body="b")),
         "email.to"),
        (
            pb.NotifyRequest(
                idempotency_key="header-injection", email=pb.Email(to="a@b.pl", subject="hi\r\nBcc: x@y.pl", body="b")
            ),
            "single line",
        ),
        (pb.NotifyRequest(idempotency_key="bcc-header", email=pb.Email(to="a@b.pl", subject="s", body="b",
                                                                      headers={"Bcc": "x@y.pl"})), "may not set"),
        (pb.NotifyRequest(idempotency_key="header-value-injection", email=pb.Email(
            to="a@b.pl", subject="s", body="b", headers={"List-Unsubscribe": "<u>\r\nBcc: x@y.pl"})), "single line"),
        (pb.NotifyRequest(idempotency_key="marketing-slack", slack=pb.SlackAlert(title="Buy"),
                          purpose=pb.PURPOSE_MARKETING), "must be an email"),
    ],
)
def test_bad_input_is_invalid_argument_and_nothing_is_stored(notifier, request_, complaint):
    with pytest.raises(grpc.RpcError) as error:
        notifier.internal.Notify(request_, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (error.value.details() or "")
    if request_.idempotency_key and " " not in request_.idempotency_key:
        with pytest.raises(grpc.RpcError) as missing:
            notifier.delivery(request_.idempotency_key)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_admin_stats_list_and_diagnose_describe_the_queue(notifier):
    wait_for(lambda: notifier.stats().pending == 0, what="an empty queue")
    stats = notifier.stats()
    assert stats.dead == 1 and stats.failed == 0
    assert pb.DlqCount(destination=pb.SLACK, status=pb.DEAD, count=1) in stats.counts

    dead = notifier.admin.ListDeadLetters(pb.ListDeadLettersRequest(status=pb.DEAD), timeout=10).entries
    assert [e.idempotency_key for e in dead] == ["lead-404"]
    assert json.loads(dead[0].payload_json)["title"] == "Webhook removed"

    report = notifier.admin.Diagnose(diagnostics_pb2.DiagnoseRequest(), timeout=10)
    checks = {c.name: c for c in report.checks}
    assert checks["database"].ok and checks["scheduler"].ok and checks["breaker:slack"].detail == "closed"
    assert checks["dlq"].detail == "0 pending, 0 failed, 1 dead, 0 cancelled"


def test_replaying_a_dead_entry_delivers_it_once_the_cause_is_fixed(notifier, module_receivers):
    slack = module_receivers[0]
    dead = notifier.delivery("lead-404")
    replay = pb.ReplayDeadLettersRequest(delivery_ids=[dead.delivery_id])
    replayed = notifier.admin.ReplayDeadLetters(replay, timeout=10)

    assert replayed.replayed == 1
    notifier.wait_status("lead-404", pb.DELIVERED)
    assert slack_titles(slack).count("Webhook removed") == 1
    with pytest.raises(grpc.RpcError) as error:
        notifier.admin.ReplayDeadLetters(pb.ReplayDeadLettersRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_purge_removes_only_delivered_entries_older_than_asked(notifier):
    kept = notifier.admin.PurgeDeadLetters(pb.PurgeDeadLettersRequest(older_than_days=30), timeout=10)
    assert kept.deleted == 0
    delivered_before = sum(c.count for c in notifier.stats().counts if c.status == pb.DELIVERED)
    assert delivered_before > 0
    # Entries delivered in this test run are younger than a day: only a purge of everything delivered reaches them.
    assert notifier.admin.PurgeDeadLetters(pb.PurgeDeadLettersRequest(older_than_days=1), timeout=10).deleted == 0
