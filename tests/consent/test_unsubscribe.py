"""The seeds' unsubscribe scenarios (audit entry created, revoke works, status works) over gRPC, on SQLite and on
PostgreSQL, plus erasure after revoke, normalisation and retried requests. Revoke and status act once the person
confirms from the link emailed to them (RunningConsent.confirm_latest); the end-to-end test of that flow, through
Envoy with a real SMTP server, is test_verified_requests."""
from __future__ import annotations

from datetime import UTC

import grpc
import pytest

from novahouse.common.v1 import diagnostics_pb2
from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from services.consent.crypto import KeyDestroyed
from services.consent.storage import ledger_entries, subjects
from services.runtime.request_context import CLIENT_IP_HEADER
from testsupport.consent import BACKENDS, running_consent
from testsupport.waiting import wait_for

EDGE_IP = "203.0.113.7"


@pytest.fixture(scope="module", params=BACKENDS)
def consent(request, tmp_path_factory):
    with running_consent(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(consent):
    channel = consent.channel()
    yield (
        consent_pb2_grpc.ConsentStub(channel),
        consent_pb2_grpc.ConsentInternalStub(channel),
        consent_pb2_grpc.ConsentAdminStub(channel),
    )
    channel.close()


EDGE = ((CLIENT_IP_HEADER, EDGE_IP),)


def opt_in(internal, email, marketing=True, request_id=""):
    return internal.RecordConsent(
        pb.RecordConsentRequest(
            email=email, processing_consent=True, marketing_consent=marketing, text_version="rodo-2025-01",
            source="chat-widget", session_id="sess-1", conversation_id="conv-1", lead_id="lead-1",
            client_ip="198.51.100.4", user_agent="Mozilla/5.0 (chat)", request_id=request_id,
        )
    )


def test_unsubscribe_creates_audit_entry(stubs):
    public, _, admin = stubs
    public.Unsubscribe(pb.UnsubscribeRequest(email="audit@example.com", reason="Too many emails"), metadata=EDGE)

    export = admin.ExportSubject(pb.ExportSubjectRequest(email="audit@example.com"))
    assert [e.action for e in export.entries] == ["unsubscribe"]
    entry = export.entries[0]
    assert entry.client_ip == EDGE_IP
    assert entry.user_agent.startswith("TestBrowser/1.0")
    assert entry.reason == "Too many emails"
    assert entry.recorded_at.seconds > 0
    assert not entry.marketing_consent
    assert admin.VerifyLedger(pb.VerifyLedgerRequest()).ok


def test_unsubscribe_turns_marketing_off_and_keeps_processing(stubs):
    public, internal, admin = stubs
    assert opt_in(internal, "keen@example.com").marketing_consent

    status = public.Unsubscribe(pb.UnsubscribeRequest(email="keen@example.com"), metadata=EDGE)

    # The answer does not tell whether processing consent (a record) exists; the ledger keeps it.
    assert (status.processing_consent, status.marketing_consent, status.last_action) == (False, False, "unsubscribe")
    latest = admin.ExportSubject(pb.ExportSubjectRequest(email="keen@example.com")).entries[-1]
    assert (latest.action, latest.processing_consent, latest.marketing_consent) == ("unsubscribe", True, False)


def test_unsubscribe_status_shows_last_action_and_time(consent, stubs):
    public, internal, _ = stubs
    opt_in(internal, "status@example.com")
    done = public.Unsubscribe(pb.UnsubscribeRequest(email="status@example.com"), metadata=EDGE)

    asked = public.GetStatus(pb.GetStatusRequest(email="status@example.com"))
    assert asked == pb.ConsentStatus(email="status@example.com", message=asked.message) and asked.message
    page = consent.confirm_latest("status@example.com")

    assert "Processing of your data</th><td>yes" in page and "Marketing emails</th><td>no" in page
    when = done.last_action_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")
    assert done.last_action_at.seconds > 0 and f"unsubscribe at {when}" in page


def test_unknown_email_answers_no_consent(consent, stubs):
    public, internal, _ = stubs
    opt_in(internal, "somebody@example.com")
    known = public.GetStatus(pb.GetStatusRequest(email="somebody@example.com"))
    status = public.GetStatus(pb.GetStatusRequest(email="Nobody@Example.com"))
    assert status == pb.ConsentStatus(email="nobody@example.com", message=known.message)
    assert "Nothing is on record for nobody@example.com" in consent.confirm_latest("nobody@example.com")


def test_emails_are_normalised_before_anything_else(stubs):
    public, internal, admin = stubs
    opt_in(internal, "  Mixed.Case@Example.COM ")
    public.Unsubscribe(pb.UnsubscribeRequest(email="mixed.case@example.com"), metadata=EDGE)

    export = admin.ExportSubject(pb.ExportSubjectRequest(email="MIXED.case@example.com"))
    assert export.email == "mixed.case@example.com"
    assert [e.action for e in export.entries] == ["opt-in", "unsubscribe"]


def test_retried_request_records_one_event(stubs):
    public, internal, admin = stubs
    opt_in(internal, "retry@example.com", request_id="optin-42")
    opt_in(internal, "retry@example.com", request_id="optin-42")
    for _ in range(3):
        public.Unsubscribe(pb.UnsubscribeRequest(email="retry@example.com", request_id="unsub-42"), metadata=EDGE)

    export = admin.ExportSubject(pb.ExportSubjectRequest(email="retry@example.com"))
    assert [(e.action, e.request_id) for e in export.entries] == [("opt-in", "optin-42"), ("unsubscribe", "unsub-42")]

    with pytest.raises(grpc.RpcError) as reused:
        opt_in(internal, "retry@example.com", request_id="unsub-42")
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_revoke_turns_everything_off_then_erases_the_person(consent, stubs):
    public, internal, admin = stubs
    email = "revoke@example.com"
    opt_in(internal, email)
    subject_id = _subject_id(consent, email)

    asked = public.RevokeConsent(pb.RevokeConsentRequest(email=email, reason="Forget me"), metadata=EDGE)
    assert asked == pb.ConsentStatus(email=email, message=asked.message)
    assert [e.action for e in admin.ExportSubject(pb.ExportSubjectRequest(email=email)).entries] == ["opt-in"]
    assert "being erased" in consent.confirm_latest(email, metadata=EDGE)

    wait_for(lambda: any(e == email for e, _ in consent.chat.erased), what="erasure requested from chat")
    wait_for(
        lambda: list(admin.ExportSubject(pb.ExportSubjectRequest(email=email)).entries) == [],
        what="the export after erasure",
    )
    # Answers exactly as for a person never seen.
    assert not internal.GetMarketingConsent(pb.GetMarketingConsentRequest(email=email)).allowed
    public.GetStatus(pb.GetStatusRequest(email=email))
    assert "Nothing is on record" in consent.confirm_latest(email)

    # The ledger still proves consent existed and was withdrawn, but its personal data no longer decrypts.
    with consent.db.engine.connect() as conn:
        rows = conn.execute(
            ledger_entries.select().where(ledger_entries.c.subject_id == subject_id).order_by(ledger_entries.c.seq)
        ).all()
        key_row = conn.execute(subjects.select().where(subjects.c.subject_id == subject_id)).one()
    assert [r.action for r in rows] == ["opt-in", "revoke", "erasure-completed"]
    assert key_row.wrapped_key is None and key_row.subject_hash is None
    with pytest.raises(KeyDestroyed):
        consent.app.consent.crypto.unwrap(subject_id, key_row.wrapped_key)
    for row in rows[:2]:
        with pytest.raises(KeyDestroyed):
            consent.app.consent.decrypt_entry(row._mapping, None)
    verification = admin.VerifyLedger(pb.VerifyLedgerRequest())
    assert verification.ok and verification.first_bad_seq == 0


def test_revoke_of_unknown_email_still_erases_in_chat(consent, stubs):
    public, _, _ = stubs
    public.RevokeConsent(pb.RevokeConsentRequest(email="stranger@example.com"), metadata=EDGE)
    consent.confirm_latest("stranger@example.com", metadata=EDGE)
    wait_for(lambda: any(e == "stranger@example.com" for e, _ in consent.chat.erased), what="erasure in chat")


def test_diagnose_reports_database_ledger_and_pending_erasures(stubs):
    _, _, admin = stubs
    report = admin.Diagnose(diagnostics_pb2.DiagnoseRequest())
    checks = {c.name: c for c in report.checks}
    assert report.service == "consent" and report.healthy
    assert checks["database"].ok
    assert checks["ledger"].detail.endswith(" entries") and int(checks["ledger"].detail.split()[0]) > 0
    assert checks["erasures:pending"].detail.split()[0].isdigit()


def _subject_id(consent, email: str) -> str:
    crypto = consent.app.consent.crypto
    with consent.db.engine.connect() as conn:
        return conn.execute(
            subjects.select().with_only_columns(subjects.c.subject_id).where(
                subjects.c.subject_hash == crypto.subject_hash(email)
            )
        ).scalar_one()
