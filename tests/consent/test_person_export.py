"""An access request (GDPR Art. 15/20): the whole platform through Envoy, on PostgreSQL (one schema per service),
with real Slack, Monday.com and SMTP receivers.

A visitor with a unique name completes a lead (their phone typed one way), opens a second chat where they type
the phone another way, and gets a follow-up. Then every table of the three schemas is dumped and searched for the
email, each phone format, the name and the ids linked to them: each row found must be in the export document the
operator gets from the admin listener. The route is not on the public listener, and a peer that does not answer
makes the export fail rather than come out incomplete.
"""
from __future__ import annotations

import json
import random
import string
import uuid

import grpc
import pytest

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from testsupport import backing
from testsupport.stack import postgres_platform
from testsupport.waiting import wait_for

EXPORT_PATH = "/api/admin/consent/export"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with postgres_platform(tmp_path_factory.mktemp("export"), "export", {
        "chat": {"SCHEDULER_ENABLED": "false", "FOLLOWUP_DELAYS": "1s,1000s,2000s"},
        "consent": {"CONSENT_EXPORT_TIMEOUT_S": "2"},
    }) as platform:
        yield platform


def unique_name() -> str:
    letters = "".join(random.choices(string.ascii_lowercase, k=8))
    return f"Ksawery Zbrzeczyk{letters}"


def new_email() -> str:
    return f"person.{uuid.uuid4().hex[:10]}@example.org"


def new_phone() -> str:
    return random.choice("56") + "".join(random.choices(string.digits, k=8))  # a Polish mobile: 5x and 6x are all valid


def export(platform, email: str):
    return platform.gw.rest("POST", EXPORT_PATH, admin=True, json={"email": email})


def dump(platform) -> list[tuple[str, str, dict, str]]:
    """Every row of every table of the three schemas: (service, table, row, row as text)."""
    rows = []
    with backing.postgres_connect() as conn:
        for service, schema in platform.schemas.items():
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE'", (schema,),
            ).fetchall()
            for (table,) in tables:
                query = f'SELECT row_to_json(t), row_to_json(t)::text FROM "{schema}"."{table}" t'
                for row, text in conn.execute(query).fetchall():
                    rows.append((service, table, row, text))
    return rows


@pytest.fixture(scope="module")
def person(platform):
    """One visitor's whole journey: a lead, a second chat with the phone typed differently, a follow-up; and a
    second visitor (someone else) whose data must not appear in the first one's export."""
    name, email, phone = unique_name(), new_email(), new_phone()
    typed_phones = [f"+48 {phone[:3]} {phone[3:6]} {phone[6:]}", f"{phone[:3]}-{phone[3:6]}-{phone[6:]}"]
    first = platform.chat([
        "Hello, how long does a renovation take?", f"My name is {name}", email, typed_phones[0],
        "The flat is 85 sqm in Warszawa", "budget 250k PLN", "we could start in 2 months",
    ], consent=True)
    second = platform.chat(["Hi again, do you also do kitchens?", f"My name is {name}", typed_phones[1]],
                  consent=False)
    other_email = new_email()
    platform.chat(["Hello", "My name is Jan Kowalski", other_email, f"+48 {new_phone()}",
                    "The flat is 40 sqm in Gdansk", "budget 60k PLN", "in 8 months"], consent=True)

    def sent_to_slack_and_monday():
        return (any(name in r.body.decode() for r in platform.slack.requests)
                and any(email in r.body.decode() for r in platform.monday.requests))

    wait_for(sent_to_slack_and_monday, 30, "the lead's Slack alert and Monday.com item")

    def followed_up():
        response = platform.gw.rest("POST", "/api/admin/followups/run", admin=True, json={})
        assert response.status_code == 200, response.text
        return platform.smtp.to(email)

    wait_for(followed_up, 30, "a follow-up", interval=0.3)
    return type("Person", (), {"name": name, "email": email, "phone": phone, "typed_phones": typed_phones,
                               "sessions": [first, second], "other_email": other_email})


def test_the_export_holds_every_row_a_dump_of_all_schemas_finds_about_the_person(platform, person):
    response = export(platform, person.email.upper())  # found however the operator typed the address
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["email"] == person.email

    conversations = {c["conversation_id"]: c for c in document["chat"]["conversations"]}
    messages = {m["message_id"] for c in conversations.values() for m in c["messages"]}
    followups = {f["followup_id"] for c in conversations.values() for f in c["followups"]}
    leads = {lead["lead_id"]: lead for lead in document["chat"]["leads"]}
    handovers = {h["handover_id"] for lead in leads.values() for h in lead["handover"]}
    ledger = {e["seq"] for e in document["consent"]["ledger"]}
    deliveries = {d["delivery_id"]: d for d in document["deliveries"]}

    # What the person would look for: both chats, the lead with its score and status, the consents, the sends.
    assert {c["session_id"] for c in conversations.values()} == set(person.sessions)
    [lead] = leads.values()
    assert lead["name"] == person.name and lead["phone"] == f"+48{person.phone}" and lead["score"] == 100
    assert lead["status"] == "handed-over"
    assert document["consent"]["current"]["marketing_consent"] is True
    assert [e["action"] for e in document["consent"]["ledger"]] == ["opt-in"]
    assert document["consent"]["ledger"][0]["lead_id"] == lead["lead_id"]
    purposes = sorted((d["destination"], d["purpose"], d["status"]) for d in deliveries.values())
    assert purposes == [("email", "marketing", "delivered"), ("monday", "internal-alert", "delivered"),
                        ("slack", "internal-alert", "delivered")]
    assert all(d["created_at"] and d["delivered_at"] for d in deliveries.values())
    assert person.other_email not in response.text and "Kowalski" not in response.text

    needles = [person.email, *person.typed_phones, person.phone, person.name, lead["lead_id"], *person.sessions]
    person_conversations = set(conversations)
    represented = {
        ("chat", "conversation"): lambda row: row["id"] in conversations,
        ("chat", "message"): lambda row: row["id"] in messages,
        ("chat", "lead"): lambda row: row["id"] in leads,
        ("chat", "followup_event"): lambda row: row["id"] in followups,
        ("chat", "lead_outbox"): lambda row: row["id"] in handovers,
        ("consent", "ledger_entries"): lambda row: row["seq"] in ledger,
        ("notifier", "deliveries"): lambda row: row["id"] in deliveries,
    }
    hits = 0
    for service, table, row, text in dump(platform):
        linked = table in ("message", "followup_event") and row.get("conversation_id") in person_conversations
        if not linked and not any(needle.lower() in text.lower() for needle in needles):
            continue
        hits += 1
        check = represented.get((service, table))
        assert check is not None, f"{service}.{table} holds the person's data but the export has no part for it: {text}"
        assert check(row), f"{service}.{table} row not in the export: {text}"
    # the two conversations, their messages, the lead, the follow-up, the opt-in and the three deliveries at least
    assert hits >= 2 + len(messages) + 1 + 1 + 1 + 3


def test_a_chat_found_only_by_the_phone_typed_another_way_is_included(platform, person):
    document = export(platform, person.email).json()
    by_session = {c["session_id"]: c for c in document["chat"]["conversations"]}
    second = by_session[person.sessions[1]]
    assert second["contact_email"] is None and "phone" in second["found_by"]
    assert any(person.typed_phones[1] in m["text"] for m in second["messages"])


def test_the_export_route_is_not_on_the_public_listener(platform, person):
    response = platform.gw.rest("POST", EXPORT_PATH, json={"email": person.email})
    assert response.status_code == 404
    assert person.email not in response.text


def test_the_export_rpcs_answer_on_the_admin_listener_only(platform, person):
    """An operator's gRPC client gets the same document; the peers' parts are internal RPCs, never public."""
    admin, public = platform.gw.channel(admin=True), platform.gw.channel()
    body = consent_pb2_grpc.ConsentAdminStub(admin).ExportPerson(
        consent_pb2.ExportPersonRequest(email=person.email), timeout=30
    )
    document = json.loads(body.data)
    assert body.content_type == "application/json" and document["email"] == person.email

    chat_request = chat_pb2.ExportSubjectRequest(email=person.email)
    chat = chat_pb2_grpc.ChatInternalStub(admin).ExportSubject(chat_request, timeout=30)
    assert json.loads(chat.document_json) == document["chat"]
    assert sorted(chat.session_ids) == sorted(person.sessions) and list(chat.phones) == [f"+48{person.phone}"]
    deliveries_request = notifier_pb2.ExportDeliveriesRequest(
        email=person.email, phones=chat.phones, lead_ids=chat.lead_ids, session_ids=chat.session_ids,
        conversation_ids=chat.conversation_ids,
    )
    deliveries = notifier_pb2_grpc.NotifierInternalStub(admin).ExportDeliveries(deliveries_request, timeout=30)
    assert {d["delivery_id"] for d in json.loads(deliveries.document_json)} == {
        d["delivery_id"] for d in document["deliveries"]}

    for call in (
        lambda: consent_pb2_grpc.ConsentAdminStub(public).ExportPerson(
            consent_pb2.ExportPersonRequest(email=person.email), timeout=10),
        lambda: chat_pb2_grpc.ChatInternalStub(public).ExportSubject(chat_request, timeout=10),
        lambda: notifier_pb2_grpc.NotifierInternalStub(public).ExportDeliveries(deliveries_request, timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_no_log_holds_the_email_phone_or_name_after_an_export(platform, person):
    """The email travels in a POST body, never in a path; the services' logs redact what they write."""
    assert export(platform, person.email).status_code == 200
    logs = "\n".join(p.read_text(errors="replace") for p in platform.gw.stack.log_dir.glob("*.log"))
    assert logs and "ExportPerson" in logs
    for secret in (person.email, person.phone, *person.typed_phones, person.name):
        assert secret not in logs


def test_an_unknown_address_gets_an_empty_document(platform):
    response = export(platform, new_email())
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["chat"] == {"conversations": [], "leads": [], "names": [], "agent_actions": []}
    assert document["consent"]["ledger"] == [] and document["deliveries"] == []


def test_a_malformed_address_is_refused(platform):
    response = export(platform, "not-an-email")
    assert response.status_code == 400, response.text


def test_a_peer_that_does_not_answer_fails_the_export_instead_of_leaving_a_part_out(platform, person):
    stack = platform.gw.stack
    stack.processes["notifier"].stop()
    try:
        response = export(platform, person.email)
        assert response.status_code == 503, response.text
        assert "deliveries" not in response.text and person.name not in response.text
    finally:
        stack.start_service("notifier")
    wait_for(lambda: export(platform, person.email).status_code == 200, 60, "the export once the notifier is back")
