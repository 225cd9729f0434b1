"""Through Envoy, with the real consent and notifier services: visitors become leads, consents are on record,
and each lead makes exactly one Monday.com item (and a high score one Slack alert) at local HTTP receivers.
Every Chat, ChatInternal, ChatAdmin and PlatformHealth RPC is called through the gateway here."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import grpc
import pytest

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from tests.chat.scripts import ENGLISH_LOW_SCORE, POLISH_HIGH_SCORE
from testsupport.receivers import HttpReceiver, MondayBoard
from testsupport.stack import running_stack, sales_env
from testsupport.waiting import wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with HttpReceiver() as slack, HttpReceiver(respond=MondayBoard) as monday:
        env = {
            **sales_env(slack, monday),
            # More visitors from one address than the default limits let through; the limits are not tested here.
            "CHAT_RATE_LIMIT": "100000 per minute",
            "API_RATE_LIMIT_MINUTE": "100000 per minute",
            "API_RATE_LIMIT_HOUR": "100000 per hour",
            "SHIELD_BURST": "100000",
            "SHIELD_PER_SECOND": "100000",
        }
        with running_stack(tmp_path_factory.mktemp("chat-e2e"), env=env) as gw:
            yield type("Platform", (), {"gw": gw, "slack": slack, "monday": monday})


def items_for(receiver: HttpReceiver, lead_id: str) -> int:
    """Slack: the messages naming the lead; Monday.com: the board's items holding it in their lead_id column."""
    if isinstance(receiver.responder, MondayBoard):
        return sum(item["column_values"].get("lead_id") == lead_id for item in list(receiver.responder.items.values()))
    return sum(lead_id in r.body.decode(errors="replace") for r in receiver.requests)


def chat_over_rest(gw, messages: list[str]) -> tuple[str, str, dict]:
    """The messages as one visitor over REST: (session id, the secret of the first reply, the last reply)."""
    session, secret, body = "", "", {}
    for text in messages:
        response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text})
        assert response.status_code == 200, response.text
        body = response.json()
        session, secret = body["session_id"], secret or body["session_secret"]
    return session, secret, body


def consent_on_record(gw, email: str) -> tuple[bool, bool]:
    """(processing, marketing) of the person's latest consent event, as an operator's export shows it (the public
    status route only emails the person a link), once chat's hand-over has recorded it."""
    stub = consent_pb2_grpc.ConsentAdminStub(gw.channel(admin=True))
    entries = wait_for(lambda: stub.ExportSubject(consent_pb2.ExportSubjectRequest(email=email), timeout=10).entries,
                       what="the visitor's consent statement in the ledger")
    return entries[-1].processing_consent, entries[-1].marketing_consent


def read_transcript(gw, session: str, secret: str | None):
    headers = {"x-session-secret": secret} if secret is not None else {}
    return gw.rest("GET", f"/api/chatbot/conversations/{session}", headers=headers)


def test_polish_visitor_over_rest_becomes_one_monday_item_and_one_slack_alert(platform):
    gw = platform.gw
    session, secret, body = chat_over_rest(gw, POLISH_HIGH_SCORE)
    assert body["consent_prompt"]["kind"] == "processing" and body["consent_prompt"]["text_version"]
    response = gw.rest(
        "POST", "/api/chatbot/chat",
        json={"session_id": session, "message": "", "processing_consent": True, "marketing_consent": True},
    )
    assert response.status_code == 200, response.text
    lead = response.json()["lead"]
    assert lead["score"] == 100 and lead["lead_id"]

    assert consent_on_record(gw, "jan.kowalski@example.com") == (True, True)

    wait_for(
        lambda: items_for(platform.monday, lead["lead_id"]) >= 1 and items_for(platform.slack, lead["lead_id"]) >= 1,
        what="the lead's Monday.com item and Slack alert",
    )
    assert items_for(platform.monday, lead["lead_id"]) == 1
    assert items_for(platform.slack, lead["lead_id"]) == 1

    transcript = read_transcript(gw, session, secret).json()
    assert len(transcript["messages"]) == 10 and transcript["lead"]["lead_id"] == lead["lead_id"]
    # The session id went to Monday.com and Slack; by itself it reads nothing.
    assert any(session in r.body.decode(errors="replace") for r in platform.monday.requests)
    unknown = read_transcript(gw, "8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11", secret)
    assert unknown.status_code == 404
    for wrong in (None, "", "not-the-secret", session):
        refused = read_transcript(gw, session, wrong)
        assert (refused.status_code, refused.json()) == (404, unknown.json())
    logs = "".join(path.read_text(errors="replace") for path in gw.stack.config.data_dir.rglob("*.log"))
    assert logs and secret not in logs


def test_english_visitor_over_grpc_becomes_one_monday_item_and_an_alert_flagging_the_unserved_city(platform):
    chat = chat_pb2_grpc.ChatStub(platform.gw.channel())
    session = ""
    for text in [*ENGLISH_LOW_SCORE, "yes", "yes"]:
        reply = chat.SendMessage(chat_pb2.SendMessageRequest(session_id=session, message=text), timeout=30)
        session = reply.session_id
    assert reply.intent == "lead_stored" and reply.language == "en" and reply.lead.score == 50
    assert consent_on_record(platform.gw, "john.smith@example.org") == (True, True)
    wait_for(lambda: items_for(platform.monday, reply.lead.lead_id) >= 1, what="the lead's Monday.com item")
    assert items_for(platform.monday, reply.lead.lead_id) == 1
    wait_for(lambda: items_for(platform.slack, reply.lead.lead_id) == 1, what="the Slack alert")
    [alert] = [r.body.decode() for r in platform.slack.requests if reply.lead.lead_id in r.body.decode()]
    assert "city not served: Gda" in alert and "john.smith@example.org" in alert


def test_bad_input_through_the_gateway_is_400_with_a_reason_and_404_for_unknown_transcripts(platform):
    gw = platform.gw
    response = gw.rest("POST", "/api/chatbot/chat", json={"message": "x" * 2001})
    assert response.status_code == 400 and "too long" in response.text
    response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": "nope", "message": "hej"})
    assert response.status_code == 400 and "session_id" in response.text
    assert read_transcript(gw, "8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11", None).status_code == 404


def stored_message_texts(platform, session: str) -> list[str]:
    """The conversation's messages as the chat database holds them, read from its file directly."""
    with sqlite3.connect(platform.gw.stack.config.data_dir / "chat.db") as db:
        rows = db.execute(
            "SELECT m.text FROM message m JOIN conversation c ON c.id = m.conversation_id WHERE c.session_id = ?",
            (session,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    "script, refusal, typed, phone_digits",
    [
        (POLISH_HIGH_SCORE, {"message": "nie"}, ["jan.kowalski@example.com", "600 700 800", "Kowalski"], "600700800"),
        (ENGLISH_LOW_SCORE, {"message": "", "processing_consent": False},
         ["john.smith@example.org", "+48 601 234 567", "John Smith"], "601234567"),
    ],
    ids=["pl", "en"],
)
def test_a_refused_consent_removes_the_typed_details_from_the_database_and_the_transcript(
    platform, script, refusal, typed, phone_digits
):
    gw = platform.gw

    def leaks(texts: list[str]) -> list[str]:
        return [
            text for text in texts
            if any(value.lower() in text.lower() for value in typed) or phone_digits in re.sub(r"\D", "", text)
        ]

    session, secret, body = chat_over_rest(gw, script)
    assert body["consent_prompt"]["kind"] == "processing" and leaks(stored_message_texts(platform, session))
    response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, **refusal})
    assert response.status_code == 200, response.text
    declined = response.json()
    assert declined["intent"] == "consent_declined" and declined["lead"]["captured"] == []

    stored = stored_message_texts(platform, session)
    assert len(stored) == 2 * (len(script) + 1) and leaks(stored) == []
    transcript = read_transcript(gw, session, secret)
    assert transcript.status_code == 200 and len(transcript.json()["messages"]) == len(stored)
    assert leaks([transcript.text]) == []


def test_admin_and_internal_rpcs_through_the_admin_listener(platform):
    gw = platform.gw
    run = gw.rest("POST", "/api/admin/followups/run", admin=True, json={})
    assert run.status_code == 200 and run.json()["failed"] == 0
    assert gw.rest("POST", "/api/admin/cache/purge", admin=True, json={}).status_code == 200
    purge = gw.rest("POST", "/api/admin/retention/purge", admin=True, json={"days": 1, "lead_days": 1})
    assert purge.status_code == 200 and int(purge.json()["deleted"]) == 0 and int(purge.json()["leads_deleted"]) == 0
    unknown = gw.rest("POST", f"/api/admin/chat/leads/{'0' * 32}/customer", admin=True, json={"customer": True})
    assert unknown.status_code == 404, unknown.text
    malformed = gw.rest("POST", "/api/admin/chat/leads/not-a-lead/customer", admin=True, json={"customer": True})
    assert malformed.status_code == 400, malformed.text
    assert gw.rest("POST", f"/api/admin/chat/leads/{'0' * 32}/customer", json={"customer": True}).status_code == 404
    report = gw.rest("GET", "/api/admin/chat/diagnostics", admin=True).json()
    assert report["service"] == "chat" and {c["name"] for c in report["checks"]} >= {"database", "cache"}

    internal = chat_pb2_grpc.ChatInternalStub(gw.channel(admin=True))
    request = chat_pb2.EraseSubjectRequest(email="someone.else@example.com", request_id="e2e-erase-1")
    assert internal.EraseSubject(request, timeout=30).leads_anonymised == 0
    with pytest.raises(grpc.RpcError) as refused:
        chat_pb2_grpc.ChatAdminStub(gw.channel()).PurgeCache(chat_pb2.PurgeCacheRequest(), timeout=10)
    assert refused.value.code() != grpc.StatusCode.OK  # admin RPCs are not on the public listener


def test_platform_health_through_the_gateway(platform):
    gw = platform.gw
    assert gw.rest("GET", "/api/health").json()["status"] == "ok"
    deep = gw.rest("GET", "/api/health/deep", admin=True).json()
    services = {report["service"]: report for report in deep["services"]}
    assert set(services) == {"chat", "consent", "notifier", "ratelimit"}
    assert services["ratelimit"]["healthy"] and services["consent"]["healthy"]
    assert deep["status"] == "ok", deep


def test_command_line_client_holds_a_scripted_conversation_through_the_gateway(platform):
    url = platform.gw.public_url
    first = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url,
         "--message", "Hello", "--message", "How much does it cost?"],
        capture_output=True, text=True, timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert "PLN/m²" in first.stdout
    session = first.stderr.strip().split("session: ")[-1]
    again = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url, "--session", session, "--json",
         "--message", "thanks"],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0 and '"intent": "thanks"' in again.stdout
    [secret] = re.findall(r"^secret: (\S+)$", first.stderr, re.MULTILINE)
    transcript = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url, "--session", session, "--secret", secret,
         "--transcript"],
        capture_output=True, text=True, timeout=60,
    )
    assert transcript.returncode == 0, transcript.stderr
    assert transcript.stdout.splitlines()[::2] == ["you> Hello", "you> How much does it cost?", "you> thanks"]
    without = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url, "--session", session, "--transcript"],
        capture_output=True, text=True, timeout=60,
    )
    assert without.returncode == 1 and "HTTP 404" in without.stderr and "you>" not in without.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url, "--session", "bogus", "--message", "hi"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1 and "HTTP 400" in refused.stderr
