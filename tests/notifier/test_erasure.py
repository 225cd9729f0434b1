"""ErasePerson end to end on PostgreSQL: the person's deliveries keep no personal field, what never left is
cancelled, the Monday.com item and the bot's Slack message are deleted at the receivers (through a failure first),
the same erasure id twice is one erasure, and nothing about anyone else changes."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from deploy.local.processes import free_port
from novahouse.notifier.v1 import notifier_pb2 as pb
from testsupport import backing
from testsupport.receivers import SLACK_BOT_TOKEN, HttpReceiver, MondayBoard, SlackWorkspace
from testsupport.smtp import SmtpReceiver
from testsupport.waiting import wait_for

ESCALATION = "ops@novahouse.test"
UNIQUE = uuid.uuid4().hex[:8]
NAME = f"Zofia Wymazana{UNIQUE}"
EMAIL = f"zofia.{UNIQUE}@example.org"
PHONES_TYPED = ("+48 601 602 699", "601-602-699", "601602699")
LEAD = uuid.uuid4().hex
LOST_LEAD = uuid.uuid4().hex
OTHER_PHONE = "600 700 801"


def schema_dump(schema: str) -> str:
    """Every row of every table of the notifier's schema, as text (what pg_dump --data-only would hold)."""
    with psycopg.connect(backing.TEST_DATABASE_URL) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]
        assert {"deliveries", "erasures", "erasure_actions"} <= set(tables)
        rows = []
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            rows += [r[0] for r in conn.execute(query)]
    return "\n".join(rows)


def personal_data_in(text: str) -> list[str]:
    lowered = text.lower()
    found = [v for v in (EMAIL, NAME.lower(), f"wymazana{UNIQUE}", *PHONES_TYPED) if v.lower() in lowered]
    return found + (["601602699 (digits)"] if "601602699" in "".join(c for c in text if c.isdigit()) else [])


@pytest.fixture
def receivers():
    with HttpReceiver(respond=SlackWorkspace) as slack, HttpReceiver(respond=MondayBoard) as monday, \
            SmtpReceiver() as smtp:
        yield slack, monday, smtp


@pytest.fixture
def notifier(receivers, start_notifier, pg_url, pg_schema):
    slack, monday, smtp = receivers
    return start_notifier({
        "DATABASE_URL": pg_url, "DB_SCHEMA": pg_schema,
        "SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_CHANNEL": "C0LEADS",
        "MONDAY_API_URL": monday.url, "SMTP_URL": smtp.url, "ESCALATION_EMAIL": ESCALATION,
        "DLQ_MAX_RETRIES": "2", "CONSENT_ADDR": f"127.0.0.1:{free_port()}",  # consent down: marketing waits
        "LOG_LEVEL": "INFO",  # every line the erasure and the deletes write is checked below
    })


def seed_the_person(notifier, monday) -> None:
    notifier.monday(f"lead:{LEAD}:monday", f"{NAME} – Sopot",
                    {"email": EMAIL, "phone": PHONES_TYPED[0], "lead_id": LEAD}, lookup_key=LEAD)
    notifier.slack(f"lead:{LEAD}:slack", "New lead: 88 points", f"{NAME} asks for a call at {PHONES_TYPED[1]}")
    notifier.email("service-mail", EMAIL.upper(), "Your renovation", f"Dear {NAME}, thank you.")
    for key in (f"lead:{LEAD}:monday", f"lead:{LEAD}:slack", "service-mail"):
        notifier.wait_status(key, pb.DELIVERED)
    monday.fail(500)
    notifier.monday("crm-lost", "Lead without a home", {"phone": PHONES_TYPED[2], "name": NAME})
    # A create whose every answer was lost although one attempt made the item (it holds the lookup key).
    notifier.monday("crm-answer-lost", f"{NAME} – Gdańsk", {"email": EMAIL}, lookup_key=LOST_LEAD)
    monday.responder.add(f"{NAME} – Gdańsk", {"text_lead_id": LOST_LEAD, "email": EMAIL})
    for key in ("crm-lost", "crm-answer-lost"):
        lost = notifier.wait_status(key, pb.FAILED)
        notifier.wait_status(f"escalation:{lost.delivery_id}", pb.DELIVERED)
    monday.recover()
    # A marketing follow-up that cannot leave (consent does not answer): pending until the erasure cancels it.
    followup = pb.Email(to=EMAIL, subject="Still thinking about it?", body=f"Hello {NAME}")
    notifier.internal.Notify(pb.NotifyRequest(idempotency_key="followup:41:1", email=followup,
                                              purpose=pb.PURPOSE_MARKETING), timeout=10)
    notifier.slack("other-person", "Call back", f"Someone else at {OTHER_PHONE}")
    notifier.wait_status("other-person", pb.DELIVERED)


def erase(notifier, erasure_id: str) -> pb.ErasureActions:
    return notifier.erase(erasure_id, email=EMAIL.title(), phones=[PHONES_TYPED[0]], lead_ids=[LEAD],
                          conversation_ids=["41"], names=[NAME])


@pytest.mark.postgres
def test_an_erased_person_leaves_nothing_in_the_notifier_and_the_processors_delete_their_copies(
    notifier, receivers, pg_schema, tmp_path
):
    slack, monday, smtp = receivers
    board: MondayBoard = monday.responder
    workspace: SlackWorkspace = slack.responder
    seed_the_person(notifier, monday)
    item_id = notifier.delivery(f"lead:{LEAD}:monday").external_id
    message = notifier.delivery(f"lead:{LEAD}:slack").external_id
    [unrecorded_item] = [i for i, item in board.items.items() if item["column_values"].get("text_lead_id") == LOST_LEAD]
    assert item_id in board.items and message in workspace.messages
    assert personal_data_in(schema_dump(pg_schema))  # the check can fail: before, the data is there

    monday.fail(500, times=2)
    slack.fail(500, times=1)
    erased = erase(notifier, "erasure-0001")

    assert erased.deliveries_redacted == 8
    by_action: dict[str, list[pb.ErasureAction]] = {}
    for action in erased.actions:
        by_action.setdefault(action.action, []).append(action)
    # Every failed create is looked for by its key (crm-lost by its delivery's), as one attempt may have landed.
    assert {k: len(v) for k, v in by_action.items()} == {
        "delete-item": 3, "delete-message": 1, "already-sent": 3, "nothing-sent": 1}
    assert sorted(a.external_id for a in by_action["delete-item"]) == sorted([item_id, "", ""])  # "": by lookup key
    assert by_action["delete-message"][0].external_id == message
    assert all(a.follow_up_delivery_id for a in by_action["delete-item"] + by_action["delete-message"])
    assert {a.status for a in by_action["already-sent"] + by_action["nothing-sent"]} == {"done"}

    def settled() -> pb.ErasureActions | None:
        actions = notifier.erasure_actions("erasure-0001")
        return actions if all(a.status != "pending" for a in actions.actions) else None

    report = wait_for(settled, what="the deletes to reach Monday.com and Slack")
    assert {a.status for a in report.actions} == {"done"}
    assert sorted(board.deleted) == sorted([item_id, unrecorded_item]) and not board.items
    assert message not in workspace.messages and workspace.deleted == [message]
    assert notifier.stats().cancelled == 1  # the marketing follow-up, which never left

    leftovers = personal_data_in(schema_dump(pg_schema))
    assert leftovers == [], f"personal data left in the notifier schema: {leftovers}"
    logs = "\n".join(p.read_text(errors="replace") for p in Path(tmp_path, "logs").glob("*"))
    assert "person erased from the deliveries" in logs and personal_data_in(logs) == []
    assert OTHER_PHONE in notifier.delivery("other-person").payload_json  # nobody else's delivery changed
    export = notifier.internal.ExportDeliveries(
        pb.ExportDeliveriesRequest(email=EMAIL, phones=list(PHONES_TYPED), lead_ids=[LEAD]), timeout=10)
    assert export.document_json == "[]"

    # The same erasure again: the stored actions with their current status, nothing queued, nothing redacted.
    total = sum(c.count for c in notifier.stats().counts)
    again = erase(notifier, "erasure-0001")
    assert again.deliveries_redacted == 8 and again.erased_at == erased.erased_at
    assert [(a.delivery_id, a.action, a.status) for a in again.actions] == [
        (a.delivery_id, a.action, a.status) for a in report.actions]
    assert sum(c.count for c in notifier.stats().counts) == total


@pytest.mark.postgres
def test_two_concurrent_calls_with_one_erasure_id_make_one_erasure(notifier, receivers):
    _, monday, _ = receivers
    board: MondayBoard = monday.responder
    notifier.monday("concurrent-item", f"{NAME} – Gdynia", {"email": EMAIL})
    item_id = notifier.wait_status("concurrent-item", pb.DELIVERED).external_id
    answers: list[pb.ErasureActions] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        answers.append(notifier.erase("erasure-race", email=EMAIL))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4
    follow_ups = {a.actions[0].follow_up_delivery_id for a in answers}
    assert len(follow_ups) == 1 and {a.deliveries_redacted for a in answers} == {1}
    wait_for(lambda: notifier.erasure_actions("erasure-race").actions[0].status == "done", what="the delete")
    assert board.deleted == [item_id]
