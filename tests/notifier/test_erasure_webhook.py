"""ErasePerson with Slack through an incoming webhook only (which cannot delete): the report names each message for
manual removal and the operators get exactly one notice, naming ids and times, never the person; bad input is
INVALID_ARGUMENT."""
from __future__ import annotations

import grpc
import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.waiting import wait_for

ESCALATION = "ops@novahouse.test"
NAME = "Bożena Ręcznaówna"
PHONE = "+48 602 603 604"


@pytest.fixture(scope="module")
def notifier(module_receivers, start_module_notifier):
    slack, monday, smtp = module_receivers
    process = start_module_notifier({
        "SLACK_WEBHOOK_URL": slack.url, "MONDAY_API_URL": monday.url, "SMTP_URL": smtp.url,
        "ESCALATION_EMAIL": ESCALATION,
    })
    process.slack("webhook-1", "New lead", f"{NAME}, {PHONE}")
    process.slack("webhook-2", "Call back", "Asked for a call at 602603604")
    for key in ("webhook-1", "webhook-2"):
        process.wait_status(key, pb.DELIVERED)
    return process


def test_webhook_messages_are_reported_for_manual_removal_and_the_operators_told_once(notifier, module_receivers):
    _, _, smtp = module_receivers
    first = [notifier.delivery(k).delivery_id for k in ("webhook-1", "webhook-2")]
    erased = notifier.erase("erasure-webhook", phones=["602-603-604"], names=[NAME])

    assert erased.deliveries_redacted == 2
    assert sorted((a.delivery_id, a.action, a.status, a.follow_up_delivery_id) for a in erased.actions) == sorted(
        (d, "remove-manually", "manual", "") for d in first)
    [notice] = wait_for(lambda: smtp.to(ESCALATION), what="the operators' notice")
    assert "erasure-webhook" in notice.subject
    assert all(d in notice.body for d in first) and "UTC" in notice.body
    for personal in (NAME, "Bożena", PHONE, "602603604", "602 603 604"):
        assert personal not in notice.body and personal not in notice.subject

    again = notifier.erase("erasure-webhook", phones=["602-603-604"], names=[NAME])
    assert [(a.delivery_id, a.status) for a in again.actions] == [(a.delivery_id, a.status) for a in erased.actions]
    assert notifier.stats().pending == 0 and len(smtp.to(ESCALATION)) == 1


@pytest.mark.parametrize("request_fields, problem", [
    ({"email": "someone@example.org"}, "erasure_id is required"),
    ({"erasure_id": "with space", "email": "someone@example.org"}, "erasure_id is required"),
    ({"erasure_id": "e-1"}, "name the person"),
    ({"erasure_id": "e-1", "email": "not-an-email"}, "email is malformed"),
    ({"erasure_id": "e-1", "phones": ["12"]}, "fewer than 6 digits"),
    ({"erasure_id": "e-1", "conversation_ids": ["abc"]}, "conversation id must be a number"),
])
def test_bad_input_is_invalid_argument_and_changes_nothing(notifier, request_fields, problem):
    with pytest.raises(grpc.RpcError) as refused:
        notifier.internal.ErasePerson(pb.ErasePersonRequest(**request_fields), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in str(refused.value.details())


def test_an_unknown_erasure_is_not_found(notifier):
    with pytest.raises(grpc.RpcError) as missing:
        notifier.erasure_actions("never-erased")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
