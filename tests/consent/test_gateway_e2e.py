"""Through Envoy with the real chat service: a visitor's opt-in is on record, unsubscribe and revoke work over REST,
revoke erases the person in chat once confirmed from the emailed link, the admin export shows the events with IP,
user agent and reason. Every Consent, ConsentInternal and ConsentAdmin RPC is called through the gateway here."""
from __future__ import annotations

import re

import grpc
import pytest

from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from tests.chat.scripts import POLISH_HIGH_SCORE
from testsupport.smtp import SmtpReceiver
from testsupport.stack import running_stack
from testsupport.waiting import wait_for

EMAIL = "anna.e2e@example.com"
VISITOR = [text.replace("jan.kowalski@example.com", EMAIL) for text in POLISH_HIGH_SCORE]
BROWSER = {"User-Agent": "Mozilla/5.0 (e2e browser)"}
FORGED = {"X-Forwarded-For": "6.6.6.6", "x-novahouse-client-ip": "6.6.6.6"}
PUBLIC_BASE_URL = "https://novahouse.example"


@pytest.fixture(scope="module")
def smtp():
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smtp):
    env = {
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
        "CONSENT_ERASURE_RETRY_S": "0.1",
        "CONSENT_ERASURE_POLL_S": "0.5",
        # This test polls; the rate limits are not what it is about.
        "CHAT_RATE_LIMIT": "100000 per minute",
        "API_RATE_LIMIT_MINUTE": "100000 per minute",
        "API_RATE_LIMIT_HOUR": "100000 per hour",
        "SHIELD_BURST": "100000",
        "SHIELD_PER_SECOND": "100000",
    }
    service_env = {"consent": {"PUBLIC_BASE_URL": PUBLIC_BASE_URL}}
    with running_stack(tmp_path_factory.mktemp("consent-e2e"), env=env, service_env=service_env) as gateway:
        yield gateway


def _visitor_becomes_a_lead(gw) -> tuple[str, str]:
    """(session id, the secret that reads the transcript), once chat's hand-over has put the visitor's statement in
    the ledger"""
    session, secret = "", ""
    for text in VISITOR:
        response = gw.rest("POST", "/api/chatbot/chat", json={"session_id": session, "message": text}, headers=BROWSER)
        assert response.status_code == 200, response.text
        session, secret = response.json()["session_id"], secret or response.json()["session_secret"]
    response = gw.rest(
        "POST", "/api/chatbot/chat", headers=BROWSER,
        json={"session_id": session, "message": "", "processing_consent": True, "marketing_consent": True},
    )
    assert response.status_code == 200 and response.json()["lead"]["lead_id"], response.text
    wait_for(lambda: gw.rest("GET", f"/api/admin/consent/subjects/{EMAIL}/ledger", admin=True).json().get("entries"),
             what="the visitor's consent statement in the ledger")
    return session, secret


def test_unsubscribe_revoke_erase_and_export_through_the_gateway(gw, smtp):
    session, secret = _visitor_becomes_a_lead(gw)
    opted_in = gw.rest("GET", f"/api/admin/consent/subjects/{EMAIL}/ledger", admin=True).json()["entries"]
    assert [(e["action"], e["processing_consent"], e["marketing_consent"]) for e in opted_in] == \
        [("opt-in", True, True)]

    response = gw.rest("POST", "/api/unsubscribe", json={"email": EMAIL.upper(), "reason": "Too many emails"},
                       headers={**BROWSER, **FORGED})
    assert response.status_code == 200, response.text
    status = response.json()  # the same for every address: says nothing of the processing consent on record
    assert status["marketing_consent"] is False and status["processing_consent"] is False
    assert status["last_action"] == "unsubscribe" and status["last_action_at"].endswith("Z")

    export = gw.rest("GET", f"/api/admin/consent/subjects/{EMAIL}/ledger", admin=True)
    assert export.status_code == 200, export.text
    entries = export.json()["entries"]
    assert [e["action"] for e in entries] == ["opt-in", "unsubscribe"]
    assert [int(e["seq"]) for e in entries] == sorted(int(e["seq"]) for e in entries)
    unsubscribe = entries[1]
    assert unsubscribe["client_ip"] == "127.0.0.1"  # the edge address, not the forged headers
    assert unsubscribe["user_agent"] == BROWSER["User-Agent"]
    assert unsubscribe["reason"] == "Too many emails" and unsubscribe["processing_consent"] is True
    assert entries[0]["text_version"] and entries[0]["source"] and entries[0]["lead_id"]

    response = gw.rest("POST", "/api/revoke-consent", json={"email": EMAIL, "reason": "Forget me"}, headers=BROWSER)
    assert response.status_code == 200, response.text
    assert response.json()["message"] and not response.json()["last_action"]
    [link] = re.findall(r"https://\S+", wait_for(lambda: smtp.to(EMAIL), what="the confirmation email")[0].body)
    confirmed = gw.rest("POST", link.removeprefix(PUBLIC_BASE_URL), data="confirm=yes", headers={
        **BROWSER, **FORGED, "Content-Type": "application/x-www-form-urlencoded"})
    assert confirmed.status_code == 200 and "being erased" in confirmed.text, confirmed.text

    def erased_in_chat() -> bool:
        """The conversation is deleted (chat erases by deleting, only counts stay)."""
        transcript = gw.rest("GET", f"/api/chatbot/conversations/{session}", headers={"x-session-secret": secret})
        assert transcript.status_code in (200, 404), transcript.text
        return transcript.status_code == 404 and EMAIL not in transcript.text and "Kowalski" not in transcript.text

    def forgotten() -> bool:
        response = gw.rest("GET", f"/api/admin/consent/subjects/{EMAIL}/ledger", admin=True)
        return response.status_code == 200 and response.json().get("entries", []) == []

    wait_for(erased_in_chat, timeout=30, what="chat erasure", interval=0.2)
    wait_for(forgotten, timeout=30, what="the export answering as for an unknown person", interval=0.2)

    verify = gw.rest("GET", "/api/admin/consent/ledger/verify", admin=True).json()
    assert verify["ok"] is True and int(verify["entries_checked"]) >= 4


def test_bad_input_is_400_with_a_reason(gw):
    response = gw.rest("POST", "/api/unsubscribe", json={"email": "not-an-email"})
    assert response.status_code == 400 and "not a valid address" in response.text
    response = gw.rest("POST", "/api/revoke-consent", json={"email": "ok@example.com", "reason": "x" * 10_000})
    assert response.status_code == 400 and "reason is longer" in response.text
    assert gw.rest("POST", "/api/unsubscribe", json={}).status_code == 400


def test_admin_rpcs_only_on_the_admin_listener_and_internal_over_grpc(gw):
    assert gw.rest("GET", "/api/admin/consent/ledger/verify").status_code == 404
    report = gw.rest("GET", "/api/admin/consent/diagnostics", admin=True).json()
    assert report["service"] == "consent" and {c["name"] for c in report["checks"]} == {
        "database", "ledger", "erasures:pending"
    }

    internal = consent_pb2_grpc.ConsentInternalStub(gw.channel(admin=True))
    status = internal.RecordConsent(pb.RecordConsentRequest(
        email="grpc.optin@example.com", processing_consent=True, text_version="rodo-2025-01", source="e2e",
        client_ip="198.51.100.9", user_agent="e2e", request_id="e2e-optin-1"), timeout=10)
    assert status.processing_consent and status.last_action == "opt-in"
    with pytest.raises(grpc.RpcError) as refused:
        consent_pb2_grpc.ConsentInternalStub(gw.channel()).RecordConsent(
            pb.RecordConsentRequest(email="x@example.com", processing_consent=True, text_version="v", source="s"),
            timeout=10)
    assert refused.value.code() != grpc.StatusCode.OK  # internal RPCs are not on the public listener

    public = consent_pb2_grpc.ConsentStub(gw.channel())
    asked = public.GetStatus(pb.GetStatusRequest(email="grpc.optin@example.com"), timeout=10)
    assert asked.message and not asked.processing_consent  # the status itself goes to the mailbox
    admin = consent_pb2_grpc.ConsentAdminStub(gw.channel(admin=True))
    export = admin.ExportSubject(pb.ExportSubjectRequest(email="grpc.optin@example.com"), timeout=10)
    assert [(e.action, e.client_ip, e.user_agent) for e in export.entries] == [("opt-in", "198.51.100.9", "e2e")]
