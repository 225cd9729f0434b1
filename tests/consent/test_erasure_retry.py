"""Revoke erasure survives a chat outage: retried until chat answers, then recorded and the key destroyed."""
from __future__ import annotations

from novahouse.common.v1 import diagnostics_pb2
from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from services.consent.storage import ledger_entries, pending_erasures
from testsupport.consent import running_consent
from testsupport.waiting import wait_for


def _pending_detail(admin) -> str:
    report = admin.Diagnose(diagnostics_pb2.DiagnoseRequest())
    return next(c.detail for c in report.checks if c.name == "erasures:pending")


def test_erasure_is_retried_while_chat_is_unavailable_then_completes(tmp_path):
    with running_consent("postgres", tmp_path) as consent:
        channel = consent.channel()
        public = consent_pb2_grpc.ConsentStub(channel)
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        consent.chat.fail_next = 3

        public.RevokeConsent(pb.RevokeConsentRequest(email="outage@example.com"))
        assert "being erased" in consent.confirm_latest("outage@example.com")

        wait_for(lambda: len(consent.chat.erased) == 1, what="erasure accepted by chat")
        assert len(consent.chat.attempts) == 4  # three UNAVAILABLE, then success
        assert len({request_id for _, request_id in consent.chat.attempts}) == 1  # chat erases that id once
        wait_for(lambda: _pending_detail(admin).startswith("0 pending"), what="pending erasure cleared")

        with consent.db.engine.connect() as conn:
            actions = conn.execute(ledger_entries.select().order_by(ledger_entries.c.seq)).all()
            pending = conn.execute(pending_erasures.select()).one()
        assert [row.action for row in actions] == ["revoke", "erasure-completed"]
        assert pending.attempts == 4 and pending.completed_at is not None and pending.email_enc is None
        assert list(admin.ExportSubject(pb.ExportSubjectRequest(email="outage@example.com")).entries) == []
        assert admin.VerifyLedger(pb.VerifyLedgerRequest()).ok
        channel.close()


def test_pending_erasure_is_reported_while_chat_keeps_failing(tmp_path):
    with running_consent("sqlite", tmp_path) as consent:
        channel = consent.channel()
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        consent.chat.fail_next = 10**6

        consent_pb2_grpc.ConsentStub(channel).RevokeConsent(pb.RevokeConsentRequest(email="down@example.com"))
        consent.confirm_latest("down@example.com")

        wait_for(lambda: len(consent.chat.attempts) >= 2, what="a retried erasure")
        detail = _pending_detail(admin)
        assert detail.startswith("1 pending")
        with consent.db.engine.connect() as conn:
            assert conn.execute(pending_erasures.select()).one().last_error == "chat EraseSubject: UNAVAILABLE"
        channel.close()
