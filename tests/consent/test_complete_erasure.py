"""A complete erasure (issue 11, parts 1 and 2): the whole platform through Envoy, on PostgreSQL (one schema per
service), chat's cache on Redis under a prefix of its own, with real SMTP, Monday.com and Slack receivers.

A visitor with a unique name completes a lead typing their phone one way, mentions it another way in a second chat,
gets a follow-up; a Slack message and a Monday.com item are made about them. Then they revoke the verified way
(RevokeConsent, the emailed link, the page's POST). Once the erasure report says completed: no row of the three
schemas, no Redis key or value under the stack's prefix, no service log and no line of Envoy's access log holds
their email, their phone in any format or their name; Monday.com got a delete for every item made about them and
Slack a chat.delete for every message; the report lists each outcome. Someone else's data stays.

With only a Slack incoming webhook (which cannot delete), the report names the message for manual removal and the
operators are told once, by an email that names deliveries, never the person.
"""
from __future__ import annotations

import base64
import os
import random
import re
import string
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import grpc
import pytest

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from testsupport import backing
from testsupport.receivers import SLACK_BOT_TOKEN, HttpReceiver, SlackWorkspace
from testsupport.stack import postgres_platform
from testsupport.waiting import wait_for

PUBLIC_BASE_URL = "https://novahouse.test"
REPORT_PATH = "/api/admin/consent/erasure-report"
OPERATORS = "operators@novahouse.test"
SEPARATORS = re.compile(r"[\s\-.()/]")
FAST_ERASURE = {
    "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
    "CONSENT_HMAC_KEY": base64.b64encode(os.urandom(32)).decode(),
    "CONSENT_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
    "CONSENT_ERASURE_RETRY_S": "0.2",
    "CONSENT_ERASURE_POLL_S": "0.5",
}
FAST_DELIVERIES = {"DLQ_RETRY_DELAY_SECONDS": "0.2", "DLQ_MAX_DELAY_SECONDS": "1", "DLQ_POLL_INTERVAL_S": "0.2",
                   "SLACK_MIN_INTERVAL_S": "0", "ESCALATION_EMAIL": OPERATORS}
CHAT = {"SCHEDULER_ENABLED": "false", "FOLLOWUP_DELAYS": "1s,1000s,2000s"}


@pytest.fixture(scope="module")
def redis_prefix():
    prefix = backing.unique_name("novahouse-erasure") + ":"
    yield prefix
    backing.delete_prefix(prefix)


@pytest.fixture(scope="module")
def slack_api():
    """Slack's Web API (chat.postMessage and chat.delete with the bot token)."""
    with HttpReceiver(respond=SlackWorkspace) as workspace:
        yield workspace


@pytest.fixture(scope="module")
def platform(tmp_path_factory, redis_prefix, slack_api):
    redis = {"REDIS_URL": backing.TEST_REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix}
    bot = {"SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_CHANNEL": "C0ALERTS", "SLACK_API_URL": slack_api.url}
    with postgres_platform(tmp_path_factory.mktemp("erasure"), "erasure", {
        "chat": {**CHAT, **redis},
        "consent": FAST_ERASURE,
        "notifier": {**FAST_DELIVERIES, **bot, **redis},
    }) as platform:
        yield platform


@pytest.fixture(scope="module")
def webhook_platform(tmp_path_factory):
    """Slack through the incoming webhook only: nothing posted there can be deleted."""
    with postgres_platform(tmp_path_factory.mktemp("erasure-webhook"), "erasurehook", {
        "chat": CHAT, "consent": FAST_ERASURE, "notifier": FAST_DELIVERIES,
    }) as platform:
        yield platform


class Person:
    def __init__(self):
        letters = "".join(random.choices(string.ascii_lowercase, k=8))
        self.name = f"Ksawery Zbrzeczyk{letters}"
        self.email = f"erase.me.{uuid.uuid4().hex[:10]}@example.org"
        # A Polish mobile: numbers from 5 and 6 are all valid (7x and 8x not always, and an invalid one is no phone).
        self.phone = random.choice("56") + "".join(random.choices(string.digits, k=8))
        p = self.phone
        self.typed_phones = [f"+48 {p[:3]} {p[3:6]} {p[6:]}", f"{p[:3]}-{p[3:6]}-{p[6:]}"]
        self.sessions: list[str] = []

    def secrets(self) -> list[str]:
        return [self.email, self.name, *self.typed_phones, self.phone, f"+48{self.phone}"]

    def found_in(self, text: str) -> list[str]:
        """Which of the person's data the text holds: the email and the name in any case, the phone in any format."""
        lowered = text.lower()
        found = [s for s in (self.email, self.name) if s.lower() in lowered]
        return found + (["phone"] if self.phone in SEPARATORS.sub("", text) else [])


def visit(platform, person: Person) -> None:
    """A lead with the phone typed one way, a second chat typing it another way, and a follow-up email."""
    person.sessions.append(platform.chat([
        "Hello, how long does a renovation take?", f"My name is {person.name}", person.email,
        person.typed_phones[0], "The flat is 85 sqm in Warszawa", "budget 250k PLN", "we could start in 2 months",
    ], consent=True))
    person.sessions.append(platform.chat([
        "Hi again, do you also do kitchens?", f"My name is {person.name}", f"call me on {person.typed_phones[1]}",
    ], consent=False))

    def followed_up():
        response = platform.gw.rest("POST", "/api/admin/followups/run", admin=True, json={})
        assert response.status_code == 200, response.text
        return platform.smtp.to(person.email)

    wait_for(followed_up, 30, "a follow-up email", interval=0.3)


def someone_else(platform) -> Person:
    other = Person()
    platform.chat(["Hello", f"My name is {other.name}", other.email, other.typed_phones[0],
                    "The flat is 40 sqm in Gdansk", "budget 60k PLN", "in 8 months"], consent=True)
    return other


def revoke_the_verified_way(platform, email: str) -> None:
    """RevokeConsent through the public route, then the emailed link's page, then its POST (the person's button)."""
    before = len(platform.smtp.to(email))
    asked = platform.gw.rest("POST", "/api/revoke-consent", json={"email": email, "reason": "Forget me"})
    assert asked.status_code == 200, asked.text
    messages = wait_for(lambda: (m := platform.smtp.to(email)) and len(m) > before and m, 30, "the revoke link")
    [link] = re.findall(r"https://\S+", messages[-1].body)
    parts = urlsplit(link)
    assert link.startswith(f"{PUBLIC_BASE_URL}/api/confirm?token=")
    path = f"{parts.path}?{parts.query}"
    assert platform.gw.rest("GET", path).status_code == 200
    done = platform.gw.rest("POST", path, data="confirm=yes",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "being erased" in done.text, done.text


def erasure_report(platform, **ask) -> dict:
    response = platform.gw.rest("POST", REPORT_PATH, admin=True, json=ask)
    assert response.status_code == 200, response.text
    return response.json()


def completed_report(platform, email: str) -> dict:
    return wait_for(lambda: (r := erasure_report(platform, email=email))["status"] == "completed" and r, 60,
                    "the erasure report to say completed", interval=0.5)


def dump(platform) -> list[tuple[str, str]]:
    """Every row of every table of the three schemas as text: (schema.table, row)."""
    rows = []
    with backing.postgres_connect() as conn:
        for schema in platform.schemas.values():
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE'", (schema,),
            ).fetchall()
            for (table,) in tables:
                for (text,) in conn.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t').fetchall():
                    rows.append((f"{schema}.{table}", text))
    return rows


def redis_entries(prefix: str) -> list[str]:
    """Every key under the prefix with its value, whatever its type, as text."""
    client = backing.redis_client()
    entries = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value = {"string": lambda k: client.get(k), "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: b"")(key)
        entries.append(f"{key!r} {value!r}")
    return entries


def logs(platform) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(platform.gw.stack.log_dir.glob("*.log")))


def items_about(board, person: Person) -> set[str]:
    return {item_id for item_id, item in board.items.items() if person.found_in(str(item))}


def messages_about(workspace, person: Person) -> set[str]:
    return {ref for ref, body in workspace.messages.items() if person.found_in(str(body))}


def steps(report: dict, system: str) -> list[dict]:
    return [s for s in report["steps"] if s["system"] == system]


def test_after_a_complete_erasure_no_store_log_or_processor_holds_the_person(platform, slack_api, redis_prefix):
    person, board, workspace = Person(), platform.monday.responder, slack_api.responder
    visit(platform, person)
    other = someone_else(platform)
    wait_for(lambda: items_about(board, person) and messages_about(workspace, person)
             and items_about(board, other), 30, "the leads' Monday.com items and Slack messages")
    items, messages = items_about(board, person), messages_about(workspace, person)
    assert any(person.found_in(text) for _, text in dump(platform))  # the check below can find what it looks for
    assert redis_entries(redis_prefix)  # chat's cache is in use under the prefix searched below

    revoke_the_verified_way(platform, person.email)
    report = completed_report(platform, person.email.upper())

    # the processors: a delete for every item and message made about the person, nothing else touched
    assert items <= set(board.deleted) and not items_about(board, person)
    assert messages <= set(workspace.deleted) and not messages_about(workspace, person)
    assert items_about(board, other) and set(board.deleted).isdisjoint(items_about(board, other))

    # the report: each system, each outcome
    monday = {s["detail"].split("item ")[1].split(",")[0]: s for s in steps(report, "monday")}
    assert set(monday) == items and all(s["action"] == "delete-item" and s["outcome"] == "done"
                                        for s in monday.values()), report
    slack = steps(report, "slack")
    assert {s["detail"].split("message ")[1].split(",")[0] for s in slack} == messages, report
    assert all(s["action"] == "delete-message" and s["outcome"] == "done" for s in slack), report
    assert steps(report, "email") and all(s["action"] == "already-sent" for s in steps(report, "email")), report
    assert {s["action"] for s in steps(report, "chat")} == {"linked records found", "conversations and leads deleted"}
    [redacted] = steps(report, "notifier")
    assert redacted["outcome"] == "done" and int(redacted["detail"].split()[0]) >= 4, report  # slack, monday, 2 emails
    [ledger] = steps(report, "ledger")
    assert ledger["action"] == "erasure-completed, subject key destroyed" and ledger["outcome"] == "done"
    assert all(s["outcome"] == "done" and s["at"] for s in report["steps"]), report
    assert report["request_id"].startswith("erase-")
    assert datetime.fromisoformat(report["requested_at"]) <= datetime.fromisoformat(report["completed_at"])
    assert erasure_report(platform, request_id=report["request_id"])["steps"] == report["steps"]
    actions = notifier_pb2_grpc.NotifierInternalStub(platform.gw.channel(admin=True)).GetErasureActions(
        notifier_pb2.GetErasureActionsRequest(erasure_id=report["request_id"]), timeout=30)
    assert {a.external_id for a in actions.actions if a.destination == notifier_pb2.MONDAY} == items
    assert len(actions.actions) == len(report["steps"]) - 4  # one report step per action, plus consent's four

    # the stores, the cache, the logs and Envoy's access log
    held = [(where, person.found_in(text)) for where, text in dump(platform) if person.found_in(text)]
    assert held == [], held
    cached = [entry for entry in redis_entries(redis_prefix) if person.found_in(entry)]
    assert cached == [], cached
    text = logs(platform)
    assert re.search(r'"listener":\s*"public"', text) and "ConsentAdmin/GetErasureReport" in text
    assert person.found_in(text) == []
    assert person.found_in(str(report)) == []

    # someone else's records stay
    assert any(other.found_in(row) for _, row in dump(platform))


def test_the_report_is_on_the_admin_listener_only(platform):
    response = platform.gw.rest("POST", REPORT_PATH, json={"email": "someone@example.org"})
    assert response.status_code == 404
    with pytest.raises(grpc.RpcError) as refused:
        consent_pb2_grpc.ConsentAdminStub(platform.gw.channel()).GetErasureReport(
            consent_pb2.GetErasureReportRequest(email="someone@example.org"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    unknown = platform.gw.rest("POST", REPORT_PATH, admin=True, json={"email": "never.here@example.org"})
    assert unknown.status_code == 404 and "never.here" not in unknown.text
    assert platform.gw.rest("POST", REPORT_PATH, admin=True, json={}).status_code == 400


def test_with_only_a_slack_webhook_the_report_says_remove_manually_and_operators_are_told_once(webhook_platform):
    platform, person = webhook_platform, Person()
    visit(platform, person)
    wait_for(lambda: any(person.name in r.body.decode() for r in platform.slack.requests), 30, "the Slack alert")

    revoke_the_verified_way(platform, person.email)
    # The Monday.com item's delete is a delivery of its own: the report stays pending until it has gone out.
    report = wait_for(lambda: (r := erasure_report(platform, email=person.email))
                      and any(s["system"] == "ledger" for s in r["steps"]) and r["status"] != "pending" and r,
                      60, "the erasure and its deliveries")
    [manual] = steps(report, "slack")
    assert manual["action"] == "remove-manually" and manual["outcome"] == "manual", report
    assert report["status"] == "completed", report  # nothing left that the platform can do itself
    assert all(s["outcome"] == "done" for s in steps(report, "monday")), report

    notices = wait_for(lambda: platform.smtp.to(OPERATORS), 30, "the operators' notice")
    delivery = manual["detail"].split("delivery ")[1].split(",")[0]
    assert len(notices) == 1 and report["request_id"] in notices[0].subject and delivery in notices[0].body
    assert person.found_in(notices[0].subject + notices[0].body) == []

    # asked again under the same erasure id (a retried step), the notifier tells no one twice
    again = notifier_pb2_grpc.NotifierInternalStub(platform.gw.channel(admin=True)).ErasePerson(
        notifier_pb2.ErasePersonRequest(erasure_id=report["request_id"], email=person.email), timeout=30)
    assert [a.action for a in again.actions if a.destination == notifier_pb2.SLACK] == ["remove-manually"]
    assert len(platform.smtp.to(OPERATORS)) == 1
    held = [(where, person.found_in(text)) for where, text in dump(platform) if person.found_in(text)]
    assert held == [], held
    assert person.found_in(logs(platform)) == []
