"""Through Envoy, with the real consent and notifier services: visitors become leads, consents are on record,
and each lead makes exactly one Monday.com item (and a high score one Slack alert) at local HTTP receivers.
Every Chat, ChatInternal, ChatAdmin and PlatformHealth RPC is called through the gateway here."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from tests.chat.scripts import ENGLISH_LOW_SCORE, POLISH_HIGH_SCORE
from testsupport.receivers import HttpReceiver, monday_graphql
from testsupport.stack import running_stack
from testsupport.waiting import wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with HttpReceiver() as slack, HttpReceiver(respond=monday_graphql) as monday:
        env = {
            "SLACK_WEBHOOK_URL": f"{slack.url}/hooks/test",
            "MONDAY_API_URL": f"{monday.url}/v2",
            "MONDAY_API_KEY": "test-key",
            "MONDAY_BOARD_ID": "4242",
        }
        with running_stack(tmp_path_factory.mktemp("chat-e2e"), env=env) as gw:
            yield type("Platform", (), {"gw": gw, "slack": slack, "monday": monday})


def items_for(receiver: HttpReceiver, lead_id: str) -> int:
    return sum(lead_id in r.body.decode(errors="replace") for r in receiver.requests)


def test_polish_visitor_over_rest_becomes_one_monday_item_and_one_slack_alert(platform):
    gw, session, body = platform.gw, "", {}
    for text in POLISH_HIGH_SCORE:
        response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text})
        assert response.status_code == 200, response.text
        body = response.json()
        session = body["session_id"]
    assert body["consent_prompt"]["kind"] == "processing" and body["consent_prompt"]["text_version"]
    response = gw.rest(
        "POST", "/api/chatbot/chat",
        json={"session_id": session, "message": "", "processing_consent": True, "marketing_consent": True},
    )
    assert response.status_code == 200, response.text
    lead = response.json()["lead"]
    assert lead["score"] == 100 and lead["lead_id"]

    status = gw.rest("GET", "/api/unsubscribe/status/jan.kowalski@example.com").json()
    assert status["processing_consent"] is True and status["marketing_consent"] is True

    wait_for(
        lambda: items_for(platform.monday, lead["lead_id"]) >= 1 and items_for(platform.slack, lead["lead_id"]) >= 1,
        what="the lead's Monday.com item and Slack alert",
    )
    assert items_for(platform.monday, lead["lead_id"]) == 1
    assert items_for(platform.slack, lead["lead_id"]) == 1

    transcript = gw.rest("GET", f"/api/chatbot/conversations/{session}").json()
    assert len(transcript["messages"]) == 10 and transcript["lead"]["lead_id"] == lead["lead_id"]


def test_english_visitor_over_grpc_becomes_one_monday_item_and_no_alert(platform):
    chat = chat_pb2_grpc.ChatStub(platform.gw.channel())
    session = ""
    for text in [*ENGLISH_LOW_SCORE, "yes", "yes"]:
        reply = chat.SendMessage(chat_pb2.SendMessageRequest(session_id=session, message=text), timeout=30)
        session = reply.session_id
    assert reply.intent == "lead_stored" and reply.language == "en" and reply.lead.score == 50
    status = platform.gw.rest("GET", "/api/unsubscribe/status/john.smith@example.org").json()
    assert status["processing_consent"] is True and status["marketing_consent"] is True
    wait_for(lambda: items_for(platform.monday, reply.lead.lead_id) >= 1, what="the lead's Monday.com item")
    assert items_for(platform.monday, reply.lead.lead_id) == 1
    assert items_for(platform.slack, reply.lead.lead_id) == 0


def test_bad_input_through_the_gateway_is_400_with_a_reason_and_404_for_unknown_transcripts(platform):
    gw = platform.gw
    response = gw.rest("POST", "/api/chatbot/chat", json={"message": "x" * 2001})
    assert response.status_code == 400 and "too long" in response.text
    response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": "nope", "message": "hej"})
    assert response.status_code == 400 and "session_id" in response.text
    assert gw.rest("GET", "/api/chatbot/conversations/8f14e45f-ceea-467f-a0e6-0d1b2b8e9a11").status_code == 404


def test_admin_and_internal_rpcs_through_the_admin_listener(platform):
    gw = platform.gw
    run = gw.rest("POST", "/api/admin/followups/run", admin=True, json={})
    assert run.status_code == 200 and run.json()["failed"] == 0
    assert gw.rest("POST", "/api/admin/cache/purge", admin=True, json={}).status_code == 200
    purge = gw.rest("POST", "/api/admin/retention/purge", admin=True, json={"days": 1})
    assert purge.status_code == 200 and int(purge.json()["deleted"]) == 0
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
    deep = gw.rest("GET", "/api/health/deep").json()
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
    refused = subprocess.run(
        [sys.executable, "-m", "services.chat.client", "--url", url, "--session", "bogus", "--message", "hi"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1 and "HTTP 400" in refused.stderr
