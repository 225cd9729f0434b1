"""The ledger is append-only in the database itself, tamper-evident down to any single field, and never forks."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select, text, update

from services.consent.chain import HASHED_COLUMNS, ChainKeys, hash_values
from services.consent.ledger_storage import verify as verify_ledger
from services.consent.storage import ledger_entries
from services.runtime.errors import UnavailableError
from services.runtime.request_context import Caller
from testsupport import backing
from testsupport.consent import BACKENDS, consent_service, fresh_ledger_keys, migrated_database

TARGET_SEQ = 2  # a middle entry with every column filled: an unsubscribe with reason, IP, agent and request id


@pytest.fixture(scope="module", params=BACKENDS)
def ledger(request, tmp_path_factory):
    with migrated_database(request.param, tmp_path_factory.mktemp("ledger")) as db:
        consent = consent_service(db)
        origin = Caller("203.0.113.9", "Mozilla/5.0")
        consent.record_consent("a@example.com", True, True, "rodo-1", "chat-widget", "s", "c", "l", "opt-a", origin)
        consent.unsubscribe("a@example.com", "Too many emails", "unsub-a", origin)
        consent.record_consent("b@example.com", True, False, "rodo-1", "chat-widget", "s2", "c2", "l2", "opt-b", origin)
        consent.unsubscribe("b@example.com", "", "unsub-b", origin)
        assert consent.verify().ok
        yield db, consent
        consent.writer.stop()


def _tampered(value):
    """A different value of the same type and size."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1_000_000
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 0x01])
    if isinstance(value, str):
        return ("y" if value[:1] != "y" else "z") + value[1:]
    if value is None:
        return "tampered"
    return value + timedelta(seconds=1)  # datetime


def _write_bypassing_guard(db, column: str, where_seq: int, value) -> None:
    """What an attacker with database access could do: the append-only guard switched off for one statement."""
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(update(ledger_entries).where(ledger_entries.c.seq == where_seq).values({column: value}))
            return
        triggers = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ledger_entries'")
        ).scalars().all()
        conn.execute(text("DROP TRIGGER ledger_entries_no_update"))
        conn.execute(text("DROP TRIGGER ledger_entries_no_delete"))
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == where_seq).values({column: value}))
        for ddl in triggers:
            conn.execute(text(ddl))


@pytest.mark.parametrize("column", [c.name for c in ledger_entries.columns])
def test_changing_any_single_field_is_found_and_named(ledger, column):
    db, consent = ledger
    with db.engine.connect() as conn:
        original = conn.execute(select(ledger_entries.c[column]).where(ledger_entries.c.seq == TARGET_SEQ)).scalar_one()
    changed = b"tampered" if original is None and column.endswith("_enc") else _tampered(original)
    _write_bypassing_guard(db, column, TARGET_SEQ, changed)
    try:
        result = consent.verify()
        assert not result.ok
        assert result.first_bad_seq == TARGET_SEQ, result.problem
        assert str(TARGET_SEQ) in result.problem
    finally:
        _write_bypassing_guard(db, column, int(changed) if column == "seq" else TARGET_SEQ, original)
    assert consent.verify().ok


def test_sql_update_and_delete_are_refused_on_postgres():
    with migrated_database("postgres", None) as db:
        consent = consent_service(db)
        consent.unsubscribe("guard@example.com", "bye")
        consent.writer.stop()
        with backing.postgres_connect() as conn:
            conn.execute(f'SET search_path TO "{db.schema}"')
            for statement in (
                "UPDATE ledger_entries SET action = 'opt-in'",
                "DELETE FROM ledger_entries",
                "TRUNCATE ledger_entries",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    conn.execute(statement)
            assert conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0] == 1
        assert consent.verify().ok


def test_sql_update_and_delete_are_refused_on_sqlite(tmp_path):
    with migrated_database("sqlite", tmp_path) as db:
        consent = consent_service(db)
        consent.unsubscribe("guard@example.com", "bye")
        consent.writer.stop()
        for statement in ("UPDATE ledger_entries SET action = 'opt-in'", "DELETE FROM ledger_entries"):
            with pytest.raises(Exception, match="append-only"), db.engine.begin() as conn:
                conn.execute(text(statement))
        assert consent.verify().ok


def test_concurrent_appends_from_eight_replicas_never_fork():
    """8 threads x 500 appends, each thread its own writer and connection pool, as separate replicas would be."""
    threads, per_thread = 8, 500
    with migrated_database("postgres", None) as db:
        keys = fresh_ledger_keys()  # replicas share the chain keys, as the deployment's secret gives them
        replicas = [consent_service(db, keys=keys) for _ in range(threads)]
        errors: list[BaseException] = []

        def append_many(index: int) -> None:
            try:
                for i in range(per_thread):
                    replicas[index].unsubscribe(f"user{index}-{i % 25}@example.com", f"reason {i}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=append_many, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=240)
        for replica in replicas:
            replica.writer.stop()

        assert errors == []
        result = replicas[0].verify()
        assert result.ok, result.problem
        assert result.entries_checked == threads * per_thread
        with db.engine.connect() as conn:
            seqs = conn.execute(select(ledger_entries.c.seq).order_by(ledger_entries.c.seq)).scalars().all()
            distinct_prev = conn.execute(text("SELECT count(DISTINCT prev_hash) FROM ledger_entries")).scalar_one()
        assert seqs == list(range(1, threads * per_thread + 1))
        assert distinct_prev == threads * per_thread


def test_verify_split_across_two_processes_finds_tampering_on_either_side_of_the_seam():
    """Large ledgers are verified as two ranges in two processes; a break at, before or after the seam is named."""
    with migrated_database("postgres", None) as db:
        consent = consent_service(db)
        for i in range(8):
            consent.unsubscribe(f"split{i % 3}@example.com", f"reason {i}", f"split-{i}")
        consent.writer.stop()
        keys = consent.writer.keys
        assert verify_ledger(db, keys, parallel_from=2) == verify_ledger(db, keys, parallel_from=10**9)
        assert verify_ledger(db, keys, parallel_from=2).verification.entries_checked == 8
        for seq, column in ((4, "action"), (5, "prev_hash"), (7, "reason_enc")):
            with db.engine.connect() as conn:
                original = conn.execute(
                    select(ledger_entries.c[column]).where(ledger_entries.c.seq == seq)
                ).scalar_one()
            _write_bypassing_guard(db, column, seq, _tampered(original))
            try:
                result = verify_ledger(db, keys, parallel_from=2).verification
                assert (result.ok, result.first_bad_seq) == (False, seq), result.problem
            finally:
                _write_bypassing_guard(db, column, seq, original)
        # Entry 4, the last of the first range, rewritten with a hash recomputed with the key: only the seam sees it.
        with db.engine.connect() as conn:
            row = conn.execute(
                select(*[ledger_entries.c[n] for n in HASHED_COLUMNS]).where(ledger_entries.c.seq == 4)
            ).one()
        forged = {**row._asdict(), "action": "opt-in"}
        _write_bypassing_guard(db, "action", 4, "opt-in")
        _write_bypassing_guard(db, "entry_hash", 4, keys.entry_hash([forged[n] for n in HASHED_COLUMNS]))
        result = verify_ledger(db, keys, parallel_from=2).verification
        assert (result.ok, result.first_bad_seq) == (False, 5), result.problem
        assert "does not link" in result.problem


def test_lost_database_connection_answers_unavailable_then_recovers():
    """The writer's connection killed by the server: that append is UNAVAILABLE, the next one commits."""
    with migrated_database("postgres", None) as db:
        consent = consent_service(db)
        consent.unsubscribe("before@example.com")
        connection = consent.writer._connection
        assert connection is not None
        driver = connection.connection.driver_connection
        assert driver is not None
        backend_pid = driver.info.backend_pid
        with backing.postgres_connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
        with pytest.raises(UnavailableError):
            consent.unsubscribe("during@example.com")
        assert consent.unsubscribe("after@example.com").last_action == "unsubscribe"
        consent.writer.stop()
        assert consent.status("during@example.com").last_action == ""
        assert consent.verify().entries_checked == 2


def test_keyed_entry_hash_is_hmac_sha256_of_the_compact_json_with_key_id_and_references():
    """A keyed entry's hash covers the unkeyed form's columns, then key_id and references_enc, under its key id's
    key; a key id the verifier does not hold, or a different key, gives another (or no) hash."""
    key = bytes(range(32))
    keys = ChainKeys("k2", {"k2": key, "k1": bytes(32)})
    recorded_at = datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    values = [7, recorded_at, "opt-in", "subject", True, False, "sha256:" + "a" * 64, "chat", "", "", "", None,
              b"\x01", None, None, None, "ab" * 32, "k2", b"\x02\x03"]
    reference = [7, (recorded_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1), *values[2:12],
                 "01", None, None, None, values[16], "k2", "0203"]
    canonical = json.dumps(reference, ensure_ascii=False, separators=(",", ":")).encode()
    assert keys.entry_hash(values) == hmac.new(key, canonical, hashlib.sha256).hexdigest()
    assert keys.entry_hash([*values[:17], "k1", values[18]]) != keys.entry_hash(values)
    assert keys.entry_hash([*values[:17], "k9", values[18]]) is None
    assert keys.entry_hash([*values[:17], "", values[18]]) is None  # unkeyed entries never carried references
    assert keys.entry_hash([*values[:17], "", None]) == hash_values(values[:17])


@pytest.mark.parametrize("text", ["plain", 'quo"te \\ back', "tab\tnew\nline\x00\x1f\x7f", "zażółć 😀 \u2028", ""])
def test_entry_hash_is_sha256_of_the_compact_json_of_the_row(text):
    """Entries already stored were hashed with json.dumps: the hand-written canonical form must be the same bytes."""
    recorded_at = datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    for request_id, blob in ((None, None), (text, b"\x00\xff" + text.encode())):
        values = [7, recorded_at, text, "subject", True, False, text, text, text, text, text, request_id,
                  blob, None, blob, blob, "ab" * 32]
        reference = [7, (recorded_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
                     *values[2:12], *(None if b is None else b.hex() for b in values[12:16]), values[16]]
        canonical = json.dumps(reference, ensure_ascii=False, separators=(",", ":")).encode()
        assert hash_values(values) == hashlib.sha256(canonical).hexdigest()
        naive = [values[0], recorded_at.replace(tzinfo=None), *values[2:]]
        assert hash_values(naive) == hash_values(values)
