"""The wording a person was shown is kept once per text under its SHA-256 and shown in their export; the chat
references of an entry (session, conversation, lead) are stored only encrypted under the subject key."""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from services.consent.crypto import KeyDestroyed
from services.consent.storage import consent_texts, ledger_entries
from services.runtime.errors import ValidationError
from testsupport.consent import BACKENDS, consent_service, migrated_database, running_consent

WORDING = "Zgadzam się na przetwarzanie moich danych przez NovaHouse w celu przygotowania oferty."


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_wording_is_stored_once_and_referenced_by_its_hash_instead_of_a_typed_label(backend, tmp_path):
    text_hash = hashlib.sha256(WORDING.encode()).hexdigest()
    with migrated_database(backend, tmp_path) as db:
        consent = consent_service(db)
        for person in ("ewa", "filip"):
            consent.record_consent(f"{person}@example.com", True, True, "rodo-typed-by-hand", "chat-widget",
                                   session_id=f"s-{person}", conversation_id=f"c-{person}", lead_id=f"l-{person}",
                                   consent_text=WORDING, language="pl")
        consent.record_consent("ewa@example.com", True, False, "rodo-2", "chat-widget")  # a label, no wording
        consent.writer.stop()
        with db.engine.connect() as conn:
            stored = conn.execute(select(consent_texts)).all()
            versions = conn.execute(select(ledger_entries.c.text_version).order_by(ledger_entries.c.seq)).scalars()
            assert list(versions) == [f"sha256:{text_hash}"] * 2 + ["rodo-2"]
        assert [(row.text_hash, row.language, row.wording) for row in stored] == [(text_hash, "pl", WORDING)]

        _, entries = consent.export("ewa@example.com")
        assert [(e.consent_text, e.language, e.text_version) for e in entries] == [
            (WORDING, "pl", f"sha256:{text_hash}"), ("", "", "rodo-2"),
        ]
        assert all(e.key_id == consent.writer.keys.current_id for e in entries)
        assert consent.verify().ok
        with db.engine.begin() as conn:  # the database owner rewords what was shown
            conn.execute(consent_texts.update().values(wording=WORDING.replace("oferty", "reklam")))
        result = consent.verify()
        assert (result.ok, result.first_bad_seq) == (False, 1) and "wording" in result.problem


@pytest.mark.parametrize("language", ["", "x" * 17])
def test_a_wording_needs_its_language(language, tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        consent = consent_service(db)
        with pytest.raises(ValidationError, match="language"):
            consent.record_consent("lang@example.com", True, True, "", "chat-widget", consent_text=WORDING,
                                   language=language)
        consent.writer.stop()


def test_chat_references_are_stored_encrypted_and_unreadable_once_the_key_is_gone(tmp_path):
    with migrated_database("postgres", tmp_path) as db:
        consent = consent_service(db)
        consent.record_consent("refs@example.com", True, True, "rodo-1", "chat-widget", session_id="sess-7",
                               conversation_id="conv-7", lead_id="lead-7")
        consent.writer.stop()
        with db.engine.connect() as conn:
            row = conn.execute(select(ledger_entries)).one()
        assert (row.session_id, row.conversation_id, row.lead_id) == ("", "", "")
        assert row.references_enc is not None and b"sess-7" not in row.references_enc
        _, [entry] = consent.export("refs@example.com")
        assert (entry.session_id, entry.conversation_id, entry.lead_id) == ("sess-7", "conv-7", "lead-7")
        found = consent.records.entries(consent.crypto.subject_hash("refs@example.com"))
        assert found is not None
        with pytest.raises(KeyDestroyed):
            consent.decrypt_entry(found[2][0], None)


def test_record_consent_over_grpc_keeps_the_wording_and_export_subject_shows_it(tmp_path):
    with running_consent("sqlite", tmp_path) as running, running.channel() as channel:
        consent_pb2_grpc.ConsentInternalStub(channel).RecordConsent(consent_pb2.RecordConsentRequest(
            email="grpc.wording@example.com", processing_consent=True, marketing_consent=False,
            text_version="ignored-label", source="chat-widget", consent_text=WORDING, language="pl",
            lead_id="lead-grpc",
        ), timeout=10)
        exported = consent_pb2_grpc.ConsentAdminStub(channel).ExportSubject(
            consent_pb2.ExportSubjectRequest(email="grpc.wording@example.com"), timeout=10
        )
        [entry] = exported.entries
        assert (entry.consent_text, entry.language, entry.lead_id) == (WORDING, "pl", "lead-grpc")
        assert entry.text_version == "sha256:" + hashlib.sha256(WORDING.encode()).hexdigest()
        assert entry.key_id
