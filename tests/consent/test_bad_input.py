"""Bad input is refused with INVALID_ARGUMENT and a message naming the problem, and nothing is recorded."""
from __future__ import annotations

import grpc
import pytest

from novahouse.consent.v1 import consent_pb2 as pb
from novahouse.consent.v1 import consent_pb2_grpc
from testsupport.consent import running_consent

VALID_OPT_IN = {
    "email": "ok@example.com", "processing_consent": True, "marketing_consent": True,
    "text_version": "rodo-2025-01", "source": "chat-widget",
}

CASES = [
    # (rpc, request fields, words the message must contain)
    ("Unsubscribe", {"email": ""}, "email is required"),
    ("Unsubscribe", {"email": "   "}, "email is required"),
    ("Unsubscribe", {"email": "not-an-email"}, "not a valid address"),
    ("Unsubscribe", {"email": "two@@example.com"}, "not a valid address"),
    ("Unsubscribe", {"email": "a@b"}, "not a valid address"),
    ("Unsubscribe", {"email": "space in@example.com"}, "not a valid address"),
    ("Unsubscribe", {"email": "dots..twice@example.com"}, "not a valid address"),
    ("Unsubscribe", {"email": "x" * 250 + "@example.com"}, "longer than 254"),
    ("Unsubscribe", {"email": "ctl\x00@example.com"}, "control characters"),
    ("Unsubscribe", {"email": "ok@example.com", "reason": "r" * 10_000}, "reason is longer than 1000"),
    ("Unsubscribe", {"email": "ok@example.com", "reason": "bell\x07"}, "reason contains control characters"),
    ("Unsubscribe", {"email": "ok@example.com", "request_id": "id\x1b[31m"}, "request_id contains control"),
    ("Unsubscribe", {"email": "ok@example.com", "request_id": "r" * 129}, "request_id is longer than 128"),
    ("RevokeConsent", {"email": "bad email@example.com"}, "not a valid address"),
    ("RevokeConsent", {"email": "ok@example.com", "reason": "x" * 1001}, "reason is longer than 1000"),
    ("GetStatus", {"email": "nope"}, "not a valid address"),
    ("RecordConsent", {**VALID_OPT_IN, "email": ""}, "email is required"),
    ("RecordConsent", {**VALID_OPT_IN, "processing_consent": False}, "processing_consent must be true"),
    ("RecordConsent", {**VALID_OPT_IN, "text_version": ""}, "text_version is required"),
    ("RecordConsent", {**VALID_OPT_IN, "source": ""}, "source is required"),
    ("RecordConsent", {**VALID_OPT_IN, "source": "s" * 65}, "source is longer than 64"),
    ("RecordConsent", {**VALID_OPT_IN, "session_id": "tab\there"}, "session_id contains control"),
    ("RecordConsent", {**VALID_OPT_IN, "client_ip": "999.1.1.1"}, "client_ip is not an IP address"),
    ("ExportSubject", {"email": "@example.com"}, "not a valid address"),
]

REQUESTS = {
    "Unsubscribe": pb.UnsubscribeRequest,
    "RevokeConsent": pb.RevokeConsentRequest,
    "GetStatus": pb.GetStatusRequest,
    "RecordConsent": pb.RecordConsentRequest,
    "ExportSubject": pb.ExportSubjectRequest,
}


@pytest.fixture(scope="module")
def consent(tmp_path_factory):
    with running_consent("sqlite", tmp_path_factory.mktemp("bad-input")) as running:
        channel = running.channel()
        stubs = {
            "Unsubscribe": consent_pb2_grpc.ConsentStub(channel).Unsubscribe,
            "RevokeConsent": consent_pb2_grpc.ConsentStub(channel).RevokeConsent,
            "GetStatus": consent_pb2_grpc.ConsentStub(channel).GetStatus,
            "RecordConsent": consent_pb2_grpc.ConsentInternalStub(channel).RecordConsent,
            "ExportSubject": consent_pb2_grpc.ConsentAdminStub(channel).ExportSubject,
        }
        yield running, stubs
        channel.close()


@pytest.mark.parametrize("rpc,fields,message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_and_nothing_recorded(consent, rpc, fields, message):
    running, stubs = consent
    before = running.app.consent.ledger_length()

    with pytest.raises(grpc.RpcError) as refused:
        stubs[rpc](REQUESTS[rpc](**fields))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    assert running.app.consent.ledger_length() == before
    assert running.app.consent.verify().entries_checked == before
