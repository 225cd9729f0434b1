"""The erasure after a revoke, step by step, and its report (ConsentAdmin.GetErasureReport), on a consent server
with real gRPC stand-ins for chat and the notifier (the whole platform's erasure is test_complete_erasure).

The notifier is asked to erase before chat, under the erasure's request id, and chat only once the notifier has
answered; each step's outcome is kept, so the report is found by the email after the subject's key is destroyed,
lists every system, and shows the processors' actions with their live status. No log line holds the address.
"""
from __future__ import annotations

import logging
import threading

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2
from services.consent.crypto import SubjectCrypto
from services.consent.erasure_report import ErasureReports
from services.consent.storage import ErasureRecords, PendingErasures, erasure_records, subjects
from testsupport.consent import consent_service, fresh_secrets, migrated_database, running_consent
from testsupport.peers import RecordingNotifier
from testsupport.waiting import wait_for


class ScriptedNotifier(RecordingNotifier):
    """ErasePerson that fails the next `fail_next` calls, then answers `actions`, whose status a test may change."""

    def __init__(self):
        super().__init__()
        self.fail_next = 0
        self.actions: list[notifier_pb2.ErasureAction] = []
        self.asked: list[str] = []
        self._script_lock = threading.Lock()

    def _answer(self, erasure_id: str) -> notifier_pb2.ErasureActions:
        return notifier_pb2.ErasureActions(erasure_id=erasure_id, deliveries_redacted=len(self.actions),
                                           actions=self.actions)

    def ErasePerson(self, request, context):
        with self._script_lock:
            self.asked.append(request.erasure_id)
            if self.fail_next > 0:
                self.fail_next -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "notifier database is restarting")
        super().ErasePerson(request, context)
        return self._answer(request.erasure_id)

    def GetErasureActions(self, request, context):
        return self._answer(request.erasure_id)


def action(destination, delivery_id: str, external_id: str, kind: str, status: str) -> notifier_pb2.ErasureAction:
    updated = Timestamp()
    updated.GetCurrentTime()
    return notifier_pb2.ErasureAction(delivery_id=delivery_id, destination=destination, external_id=external_id,
                                      action=kind, status=status, updated_at=updated)


def report(admin, **ask) -> pb.ErasureReport:
    return admin.GetErasureReport(pb.GetErasureReportRequest(**ask), timeout=10)


def steps_of(answer: pb.ErasureReport) -> dict[tuple[str, str], pb.ErasureStep]:
    return {(s.system, s.action): s for s in answer.steps}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_report_lists_every_system_found_by_the_email_after_the_key_is_destroyed(backend, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    notifier = ScriptedNotifier()
    notifier.actions = [
        action(notifier_pb2.MONDAY, "d-monday", "9001", "delete-item", "pending"),
        action(notifier_pb2.SLACK, "d-slack", "C0123/1700000000.000100", "remove-manually", "manual"),
        action(notifier_pb2.EMAIL, "d-email", "", "already-sent", "done"),
    ]
    email = "erased.person@example.com"
    with running_consent(backend, tmp_path, notifier) as consent:
        channel = consent.channel()
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        consent_pb2_grpc.ConsentStub(channel).RevokeConsent(pb.RevokeConsentRequest(email=email))
        consent.confirm_latest(email)

        wait_for(lambda: consent.chat.erased, what="the erasure in chat")
        ledger_step = ("ledger", "erasure-completed, subject key destroyed")
        first = wait_for(lambda: ledger_step in steps_of(r := report(admin, email=email.upper())) and r,
                         what="the ledger step in the report")
        assert first.status == "pending"  # the Monday.com delete is still being retried by the notifier
        with consent.db.engine.connect() as conn:
            assert conn.execute(subjects.select()).one().subject_hash is None  # the key and keyed hash are gone
            stored = conn.execute(erasure_records.select()).one()
        assert stored.request_id == first.request_id and stored.lookup_hash and stored.kind == "email"

        # the notifier was asked under the erasure's id, with the address, before chat erased
        [asked] = notifier.erasures
        assert asked.erasure_id == first.request_id and asked.email == email
        assert consent.chat.looked_up == [(email, "")] and consent.chat.erased == [(email, first.request_id)]

        steps = steps_of(first)
        assert set(steps) == {
            ("chat", "linked records found"), ("notifier", "deliveries redacted"),
            ("chat", "conversations and leads deleted"), ("ledger", "erasure-completed, subject key destroyed"),
            ("monday", "delete-item"), ("slack", "remove-manually"), ("email", "already-sent"),
        }
        assert steps[("notifier", "deliveries redacted")].detail.startswith("3 deliveries redacted, 3 actions")
        assert steps[("chat", "conversations and leads deleted")].detail == (
            "1 conversations, 2 messages, 1 leads deleted")
        assert steps[("monday", "delete-item")].outcome == "pending"
        assert "item 9001" in steps[("monday", "delete-item")].detail
        assert steps[("slack", "remove-manually")].outcome == "manual"
        assert "message C0123/1700000000.000100" in steps[("slack", "remove-manually")].detail
        assert all(s.at.seconds > 0 and email not in str(s) for s in first.steps)

        notifier.actions[0].status = "done"  # the notifier's delete went through: the report says so, live
        done = report(admin, email=email)
        assert done.status == "completed" and done.completed_at.seconds > 0
        assert done.requested_at.ToDatetime() <= done.completed_at.ToDatetime()
        assert report(admin, request_id=first.request_id) == done
        channel.close()

    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.name.startswith("services.consent"))
    assert "erasure completed in every system" in text
    assert email not in text.lower() and "erased.person" not in text


def test_chat_is_not_erased_until_the_notifier_has_redacted_and_a_failure_shows_in_the_report(tmp_path):
    notifier = ScriptedNotifier()
    notifier.fail_next = 3
    email = "slow.notifier@example.com"
    with running_consent("postgres", tmp_path, notifier) as consent:
        channel = consent.channel()
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        consent_pb2_grpc.ConsentStub(channel).RevokeConsent(pb.RevokeConsentRequest(email=email))
        consent.confirm_latest(email)

        failing = wait_for(lambda: bool((r := report(admin, email=email)).steps) and r, what="a failed step")
        assert failing.status == "pending"
        failed = steps_of(failing)[("notifier", "deliveries redacted")]
        assert failed.outcome == "failed" and failed.detail == "notifier ErasePerson: UNAVAILABLE; to be retried"

        wait_for(lambda: report(admin, email=email).status == "completed", what="the erasure completed")
        assert len(notifier.asked) == 4 and set(notifier.asked) == {failing.request_id}  # one erasure, retried
        assert consent.chat.erased == [(email, failing.request_id)]  # chat only after the notifier answered
        final = steps_of(report(admin, email=email))
        assert final[("notifier", "deliveries redacted")].outcome == "done"
        channel.close()


class Unasked:
    """The notifier's part of a report that has no notifier step yet: never asked."""

    def erase(self, person):
        raise AssertionError("the notifier was asked to erase")

    def actions(self, erasure_id):
        raise AssertionError("the notifier was asked for actions")


def test_a_report_asked_before_the_first_attempt_says_pending(tmp_path):
    """The revoke queued the erasure but no worker has tried it yet (the domain alone, without one)."""
    secrets = fresh_secrets()
    with migrated_database("sqlite", tmp_path) as db:
        consent = consent_service(db, secrets)
        consent.revoke("queued@example.com")
        reports = ErasureReports(ErasureRecords(db), PendingErasures(db), SubjectCrypto(secrets), Unasked())
        queued = reports.report(email="queued@example.com")
        assert queued.status == "pending" and queued.request_id.startswith("erase-") and queued.steps == []
        consent.writer.stop()


def test_an_erasure_by_phone_is_reported_by_its_request_id(tmp_path):
    notifier = ScriptedNotifier()
    with running_consent("sqlite", tmp_path, notifier) as consent:
        channel = consent.channel()
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        done = admin.ErasePhoneOnly(pb.ErasePhoneOnlyRequest(
            phone="+48 601 702 803", operator="a.nowak", identity_check_reference="TICKET-1", request_id="ph-1"))
        assert done.request_id == "ph-1" and done.conversations == 1

        answer = report(admin, request_id="ph-1")
        assert answer.status == "completed"
        steps = steps_of(answer)
        assert steps[("ledger", "erasure-completed, subject key destroyed")].detail.startswith("nothing on record")
        assert consent.chat.looked_up == [("", "+48 601 702 803")]
        [asked] = notifier.erasures
        assert asked.erasure_id == "ph-1" and "+48 601 702 803" in asked.phones and asked.email == ""
        words = [line for line in str(answer).splitlines() if not line.strip().startswith(("seconds:", "nanos:"))]
        assert not any(part in line for line in words for part in ("601", "702", "803"))
        channel.close()


def test_an_erasure_by_phone_the_notifier_missed_is_reported_and_finished_by_the_same_request(tmp_path):
    notifier = ScriptedNotifier()
    notifier.fail_next = 1
    with running_consent("sqlite", tmp_path, notifier) as consent:
        channel = consent.channel()
        admin = consent_pb2_grpc.ConsentAdminStub(channel)
        ask = pb.ErasePhoneOnlyRequest(phone="601702803", operator="a.nowak", identity_check_reference="TICKET-2",
                                       request_id="ph-2")
        with pytest.raises(grpc.RpcError) as unavailable:
            admin.ErasePhoneOnly(ask)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE and "ph-2" in (unavailable.value.details() or "")
        missed = report(admin, request_id="ph-2")
        assert missed.status == "pending" and consent.chat.erased == []  # chat keeps its records meanwhile
        assert steps_of(missed)[("notifier", "deliveries redacted")].outcome == "failed"

        assert admin.ErasePhoneOnly(ask).request_id == "ph-2"
        assert report(admin, request_id="ph-2").status == "completed"
        assert notifier.asked == ["ph-2", "ph-2"] and consent.chat.erased == [("", "ph-2")]
        channel.close()


@pytest.mark.parametrize("ask, code", [
    ({}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"email": "a@example.com", "request_id": "erase-1"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"email": "not-an-address"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"email": "never.erased@example.com"}, grpc.StatusCode.NOT_FOUND),
    ({"request_id": "erase-unknown"}, grpc.StatusCode.NOT_FOUND),
])
def test_bad_or_unknown_questions_are_refused(tmp_path, ask, code):
    with running_consent("sqlite", tmp_path) as consent:
        channel = consent.channel()
        with pytest.raises(grpc.RpcError) as refused:
            report(consent_pb2_grpc.ConsentAdminStub(channel), **ask)
        assert refused.value.code() == code
        assert "never.erased" not in (refused.value.details() or "")
        channel.close()
