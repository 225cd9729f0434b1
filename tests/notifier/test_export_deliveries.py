"""ExportDeliveries on one notifier process: the deliveries made about one person, found by their email, a phone in
any format, their lead and session ids or a follow-up of their conversation, with the escalation that carried one;
nobody else's."""
from __future__ import annotations

import json

import pytest

from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport.waiting import wait_for

ESCALATION = "ops@novahouse.test"
EMAIL = "ann_smith@example.org"  # '_' is a LIKE wildcard: it must match only itself
LEAD = "0123456789abcdef0123456789abcdef"
SESSION = "5d1c7a9e-8a51-4c55-9a8e-0f6b1d2c3e4f"


@pytest.fixture(scope="module")
def notifier(module_receivers, start_module_notifier):
    slack, monday, smtp = module_receivers
    process = start_module_notifier({
        "SLACK_WEBHOOK_URL": slack.url, "MONDAY_API_URL": monday.url, "SMTP_URL": smtp.url,
        "ESCALATION_EMAIL": ESCALATION, "DLQ_MAX_RETRIES": "0",
    })
    process.monday(f"lead:{LEAD}:monday", "Ann Smith – Sopot", {"email": EMAIL, "lead_id": LEAD, "session_id": SESSION})
    process.slack("phone-only", "Call back", "Asked for a call at 600-700-800")
    process.email("followup:7:1", "someone@example.org", "Your renovation", "Shall we talk?")
    process.wait_status(f"lead:{LEAD}:monday", pb.DELIVERED)  # before Monday.com starts failing: they raced
    monday.fail(500)
    process.monday("crm-lost", "Lost item", {"phone": "+48600700800"})
    lost = process.wait_status("crm-lost", pb.FAILED)
    process.wait_status(f"escalation:{lost.delivery_id}", pb.DELIVERED)
    monday.recover()
    # Not hers: another address that differs only where her '_' is, another phone, another conversation's follow-up.
    process.email("other", "annxsmith@example.org", "Hello", "Not for Ann")
    process.slack("other-phone", "Call back", "Asked for a call at 600 700 801")
    process.email("followup:77:1", "other@example.org", "Your renovation", "Shall we talk?")
    wait_for(lambda: process.stats().pending == 0, what="every delivery to settle")
    return process


def export(notifier, **who) -> list[dict]:
    request = pb.ExportDeliveriesRequest(email=EMAIL, **who)
    return json.loads(notifier.internal.ExportDeliveries(request, timeout=10).document_json)


def test_a_person_s_deliveries_are_found_by_email_phone_ids_and_follow_up_and_nobody_else_s(notifier):
    found = export(notifier, phones=["+48600700800"], lead_ids=[LEAD], session_ids=[SESSION], conversation_ids=["7"])
    keys = {d["idempotency_key"] for d in found}
    lost = notifier.delivery("crm-lost").delivery_id
    assert keys == {f"lead:{LEAD}:monday", "phone-only", "followup:7:1", "crm-lost", f"escalation:{lost}"}

    by_key = {d["idempotency_key"]: d for d in found}
    monday = by_key[f"lead:{LEAD}:monday"]
    assert (monday["destination"], monday["purpose"], monday["status"]) == ("monday", "internal-alert", "delivered")
    assert monday["created_at"] and monday["delivered_at"] and monday["external_id"]
    assert monday["message"]["column_values"]["email"] == EMAIL
    assert (by_key["followup:7:1"]["purpose"], by_key["followup:7:1"]["destination"]) == ("service", "email")
    assert by_key["crm-lost"]["status"] == "failed" and by_key[f"escalation:{lost}"]["kind"] == "escalation"


def test_only_what_names_the_person_is_returned(notifier):
    assert {d["idempotency_key"] for d in export(notifier)} == {f"lead:{LEAD}:monday"}
