"""Signed checkpoints and chain keys: published to a directory or to an object-locked S3-compatible bucket (a real
moto server over HTTP), checked by signature, sealing the unkeyed entries of before the keying, and keys that
rotate without breaking what they keyed."""
from __future__ import annotations

import base64
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto.server import ThreadedMotoServer
from sqlalchemy import text

from deploy.local.processes import free_port
from services.consent.app import checkpoint_store
from services.consent.chain import GENESIS_HASH, UNKEYED_COLUMNS, ChainKeys, hash_values
from services.consent.checkpoints import DirectoryStore, LedgerIntegrity, S3Store
from services.consent.ledger_keys import KEYS_FILE, LedgerKeys, load_ledger_keys, parse_chain_keys
from services.consent.settings import Settings
from services.consent.storage import consent_state, ledger_entries, ledger_head
from services.runtime.clock import utcnow
from services.runtime.config import ConfigError
from testsupport.consent import consent_service, fresh_ledger_keys, migrated_database, running_consent
from testsupport.waiting import wait_for


def _integrity(consent) -> LedgerIntegrity:
    integrity: LedgerIntegrity = consent.integrity
    return integrity


def _cut_tail_on_sqlite(db, keep: int) -> None:
    """The database owner's cut (or a restore from an older backup): triggers dropped, the tail deleted, the head
    moved back, the current states it set gone."""
    with db.engine.begin() as conn:
        triggers = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ledger_entries'")
        ).scalars().all()
        conn.execute(text("DROP TRIGGER ledger_entries_no_delete"))
        conn.execute(ledger_entries.delete().where(ledger_entries.c.seq > keep))
        new_head = conn.execute(
            text("SELECT entry_hash FROM ledger_entries WHERE seq = :seq"), {"seq": keep}
        ).scalar_one()
        conn.execute(ledger_head.update().values(seq=keep, entry_hash=new_head))
        conn.execute(consent_state.delete().where(consent_state.c.last_seq > keep))
        conn.execute(text("DROP TRIGGER ledger_entries_no_update"))
        for ddl in triggers:
            conn.execute(text(ddl))


@pytest.fixture
def s3_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_checkpoints_in_an_object_locked_bucket_cover_the_chain_and_cannot_be_deleted(
    s3_server, tmp_path, monkeypatch
):
    for name, value in {"AWS_ACCESS_KEY_ID": "checkpoints", "AWS_SECRET_ACCESS_KEY": "checkpoints-secret",
                        "CONSENT_CHECKPOINT_S3_BUCKET": "ledger-checkpoints",
                        "CONSENT_CHECKPOINT_S3_ENDPOINT": s3_server, "CONSENT_CHECKPOINT_RETAIN_DAYS": "30"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="ledger-checkpoints", ObjectLockEnabledForBucket=True)
    store = checkpoint_store(Settings.from_env())
    assert isinstance(store, S3Store)
    with migrated_database("sqlite", tmp_path) as db:
        keys = fresh_ledger_keys()
        consent = consent_service(db, keys=keys)
        consent.integrity = LedgerIntegrity(db, keys, store, interval_s=60)
        for i in range(3):
            consent.unsubscribe(f"bucket{i}@example.com", "bye")
        first = consent.integrity.checkpoint()
        for i in range(3):
            consent.unsubscribe(f"later{i}@example.com")
        consent.writer.stop()
        newest = consent.integrity.checkpoint()
        assert (first.seq, newest.seq) == (3, 6)
        result = consent.verify()
        assert result.ok and (result.checkpoint_seq, result.checkpoint_at) == (6, newest.signed_at), result.problem
        assert result.truncation_window_s == 60

        objects = client.list_object_versions(Bucket="ledger-checkpoints")["Versions"]
        assert len(objects) == 2
        for version in objects:
            locked = client.head_object(Bucket="ledger-checkpoints", Key=version["Key"], VersionId=version["VersionId"])
            assert locked["ObjectLockMode"] == "COMPLIANCE"
            assert locked["ObjectLockRetainUntilDate"] > utcnow() + timedelta(days=29)
            with pytest.raises(ClientError):
                client.delete_object(Bucket="ledger-checkpoints", Key=version["Key"], VersionId=version["VersionId"])

        _cut_tail_on_sqlite(db, 4)
        result = consent.verify()
        assert (result.ok, result.first_bad_seq) == (False, 5), result.problem


def test_a_checkpoint_not_signed_by_a_trusted_key_fails_verification_and_an_earlier_signing_key_still_counts(tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        old = fresh_ledger_keys()
        consent = consent_service(db, keys=old, checkpoint_dir=tmp_path / "checkpoints")
        consent.unsubscribe("signed@example.com")
        consent.writer.stop()
        checkpoint = _integrity(consent).checkpoint()

        rotated = LedgerKeys.of(old.chain, Ed25519PrivateKey.generate(), earlier=(old.signing.public_key(),))
        assert LedgerIntegrity(db, rotated, DirectoryStore(tmp_path / "checkpoints"), 300).verify().ok
        stranger = LedgerKeys.of(old.chain, Ed25519PrivateKey.generate())
        result = LedgerIntegrity(db, stranger, DirectoryStore(tmp_path / "checkpoints"), 300).verify()
        assert not result.ok and "not signed by a trusted key" in result.problem

        published = tmp_path / "checkpoints" / checkpoint.name
        document = json.loads(published.read_bytes())
        published.write_text(json.dumps({**document, "seq": 0}))  # a forged, lower head
        result = consent.verify()
        assert not result.ok and "not signed by a trusted key" in result.problem


def test_no_checkpoint_is_signed_over_a_chain_that_does_not_verify_unless_after_a_restore(tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        consent = consent_service(db, checkpoint_dir=tmp_path / "checkpoints")
        for i in range(4):
            consent.unsubscribe(f"seal{i}@example.com")
        consent.writer.stop()
        _integrity(consent).checkpoint()
        _cut_tail_on_sqlite(db, 2)
        with pytest.raises(ValueError, match="differs from the last signed checkpoint"):
            _integrity(consent).checkpoint()
        assert consent.verify().first_bad_seq == 3
        # The operators' answer to a restore from an older backup: the restored chain's head signed on purpose.
        assert _integrity(consent).checkpoint(after_restore=True).seq == 2
        assert consent.verify().ok


def _unkeyed_rows(db, count: int) -> None:
    """Entries as the ledger wrote them before 0004: key_id "" and plain SHA-256."""
    prev_hash = GENESIS_HASH
    with db.engine.begin() as conn:
        for seq in range(1, count + 1):
            row = {"seq": seq, "recorded_at": utcnow(), "action": "unsubscribe", "subject_id": f"old{seq}",
                   "processing_consent": False, "marketing_consent": False, "text_version": "", "source": "",
                   "session_id": "s-plain", "conversation_id": "", "lead_id": "", "request_id": None,
                   "email_enc": None, "client_ip_enc": None, "user_agent_enc": None, "reason_enc": None,
                   "prev_hash": prev_hash, "key_id": "", "references_enc": None}
            row["entry_hash"] = prev_hash = hash_values([row[name] for name in UNKEYED_COLUMNS])
            conn.execute(ledger_entries.insert().values(row))
        conn.execute(ledger_head.update().values(seq=count, entry_hash=prev_hash))


def test_unkeyed_entries_of_before_the_keying_count_only_as_far_as_a_signed_checkpoint_sealed_them(tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        _unkeyed_rows(db, 3)
        consent = consent_service(db, checkpoint_dir=tmp_path / "checkpoints")
        result = consent.verify()
        assert (result.ok, result.first_bad_seq) == (False, 1) and "not keyed" in result.problem
        sealed = _integrity(consent).checkpoint()
        assert (sealed.seq, sealed.unkeyed_until) == (3, 3)
        consent.unsubscribe("after.keying@example.com")
        consent.writer.stop()
        result = consent.verify()
        assert result.ok and result.entries_checked == 4, result.problem
        assert _integrity(consent).checkpoint().unkeyed_until == 3


def test_chain_keys_rotate_and_an_entry_under_an_unknown_key_id_is_bad(tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        k1 = os.urandom(32)
        first = fresh_ledger_keys()
        first = LedgerKeys.of(ChainKeys("k1", {"k1": k1}), first.signing)
        consent = consent_service(db, keys=first)
        consent.unsubscribe("before.rotation@example.com")
        consent.writer.stop()
        rotated = LedgerKeys.of(ChainKeys("k2", {"k2": os.urandom(32), "k1": k1}), first.signing)
        consent = consent_service(db, keys=rotated)
        consent.unsubscribe("after.rotation@example.com")
        consent.writer.stop()
        assert consent.verify().ok
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT key_id FROM ledger_entries ORDER BY seq")).scalars().all() == ["k1", "k2"]
        without_k1 = LedgerKeys.of(ChainKeys("k2", {"k2": rotated.chain.keys["k2"]}), first.signing)
        result = consent_service(db, keys=without_k1).verify()
        assert (result.ok, result.first_bad_seq) == (False, 1) and "unknown chain key" in result.problem


def test_ledger_keys_come_from_the_environment_or_a_local_file_and_are_required_when_secrets_are(
    tmp_path, monkeypatch
):
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    keys = parse_chain_keys(f"k2:{k2}, k1:{k1}")
    assert keys.current_id == "k2" and set(keys.keys) == {"k1", "k2"}
    for malformed in ("k1", f"k1:{k1},k1:{k2}", "k1:not-base64!", "k1:" + base64.b64encode(b"short").decode()):
        with pytest.raises(ConfigError):
            parse_chain_keys(malformed)

    for name in ("CONSENT_CHAIN_KEYS", "CONSENT_CHECKPOINT_SIGNING_KEY", "CONSENT_CHECKPOINT_PUBLIC_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSENT_REQUIRE_SECRETS", "true")
    with pytest.raises(ConfigError, match="CONSENT_CHAIN_KEYS"):
        load_ledger_keys(tmp_path)
    monkeypatch.setenv("CONSENT_REQUIRE_SECRETS", "false")
    local = load_ledger_keys(tmp_path)
    assert stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode) == 0o600
    again = load_ledger_keys(tmp_path)
    assert again.chain.keys == local.chain.keys
    monkeypatch.setenv("CONSENT_CHAIN_KEYS", f"k2:{k2},k1:{k1}")
    assert load_ledger_keys(tmp_path).chain.current_id == "k2"


def test_the_server_signs_checkpoints_every_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSENT_CHECKPOINT_INTERVAL_S", "0.2")
    with running_consent("sqlite", tmp_path) as running:
        running.app.consent.unsubscribe("interval@example.com")
        directory = Path(running.app.settings.checkpoint_dir)
        wait_for(lambda: running.app.consent.verify().checkpoint_seq == 1, what="a checkpoint covering entry 1")
        assert any(directory.glob("*.json"))
