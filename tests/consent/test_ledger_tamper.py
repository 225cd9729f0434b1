"""The four rewrites of issue 11, done as the database owner would (the test's postgres user: triggers disabled,
rows updated and deleted, hashes recomputed with SHA-256 as anyone without the chain key must, and also in the old
unkeyed form), are each found by `manage verify-ledger` (exit 2 naming the entry), the VerifyLedger RPC (ok=false,
first_bad_seq) and the health check. A cut tail is found once a signed checkpoint covers it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from novahouse.common.v1 import diagnostics_pb2
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from services.consent.chain import ENTRY_COLUMNS, UNKEYED_COLUMNS, hash_values
from testsupport import backing
from testsupport.consent import RunningConsent, running_consent

PEOPLE = ("ala", "bartek", "celina", "darek")


@dataclass
class Ledger:
    running: RunningConsent
    admin: consent_pb2_grpc.ConsentAdminStub
    unsubscribe_seq: int  # celina's unsubscribe, in the middle of the chain

    def sql(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        """As the database owner, with the ledger's append-only triggers switched off."""
        with backing.postgres_connect() as conn, conn.transaction():
            conn.execute(f'SET search_path TO "{self.running.db.schema}"')
            conn.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
            for statement, params in statements:
                conn.execute(statement, params)
            conn.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")

    def rows(self) -> list[dict[str, object]]:
        with backing.postgres_connect() as conn:
            conn.execute(f'SET search_path TO "{self.running.db.schema}"')
            found = conn.execute(f"SELECT {', '.join(ENTRY_COLUMNS)} FROM ledger_entries ORDER BY seq").fetchall()
        return [dict(zip(ENTRY_COLUMNS, row, strict=True)) for row in found]

    def checkpoint(self) -> None:
        """What the CronJob runs: sign the head."""
        result = subprocess.run([sys.executable, "-m", "services.consent.manage", "checkpoint-ledger"],
                                env=dict(os.environ), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    def verify_command(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.consent.manage", "verify-ledger"],
                              env=dict(os.environ), capture_output=True, text=True, timeout=120)

    def assert_broken_at(self, seq: int) -> consent_pb2.VerifyLedgerResponse:
        command = self.verify_command()
        assert command.returncode == 2, command.stdout + command.stderr
        assert f"BROKEN at entry {seq}:" in command.stdout, command.stdout
        answer = self.admin.VerifyLedger(consent_pb2.VerifyLedgerRequest(), timeout=60)
        assert (answer.ok, answer.first_bad_seq) == (False, seq), answer.problem
        health = self.admin.Diagnose(diagnostics_pb2.DiagnoseRequest(), timeout=60)
        ledger_check = next(check for check in health.checks if check.name == "ledger")
        assert not ledger_check.ok and f"entry {seq}" in ledger_check.detail
        return answer


def _attacker_rechain(rows: list[dict[str, object]], first: int, unkeyed: bool) -> list[tuple[str, tuple[object, ...]]]:
    """Recompute entry_hash and prev_hash of every row from index `first` on with plain SHA-256 (the attacker has
    no chain key): keeping each row's key_id, or rewriting the rows as unkeyed entries of before the keying."""
    statements: list[tuple[str, tuple[object, ...]]] = []
    prev_hash = rows[first - 1]["entry_hash"] if first else "0" * 64
    for row in rows[first:]:
        row["prev_hash"] = prev_hash
        if unkeyed:
            row["key_id"], row["references_enc"] = "", None
        row["entry_hash"] = prev_hash = hash_values([row[name] for name in UNKEYED_COLUMNS])
        statements.append((
            "UPDATE ledger_entries SET action = %s, marketing_consent = %s, prev_hash = %s, entry_hash = %s, "
            "key_id = %s, references_enc = %s WHERE seq = %s",
            (row["action"], row["marketing_consent"], row["prev_hash"], row["entry_hash"], row["key_id"],
             row["references_enc"], row["seq"]),
        ))
    # Unique prev_hash/entry_hash: park the old values first, so no row briefly shares a hash with another.
    park = [("UPDATE ledger_entries SET prev_hash = 'p' || seq, entry_hash = 'e' || seq WHERE seq >= %s",
             (rows[first]["seq"],))]
    head = [("UPDATE ledger_head SET seq = %s, entry_hash = %s WHERE id = 1", (rows[-1]["seq"], prev_hash))]
    return park + statements + head


@pytest.fixture
def ledger(tmp_path) -> Iterator[Ledger]:
    with running_consent("postgres", tmp_path) as running, running.channel() as channel:
        internal = consent_pb2_grpc.ConsentInternalStub(channel)
        public = consent_pb2_grpc.ConsentStub(channel)
        for person in PEOPLE:
            internal.RecordConsent(consent_pb2.RecordConsentRequest(
                email=f"{person}@example.com", processing_consent=True, marketing_consent=True,
                consent_text=f"Zgadzam się na kontakt ({person})", language="pl", source="chat-widget",
                session_id=f"s-{person}", lead_id=f"l-{person}",
            ), timeout=10)
        public.Unsubscribe(consent_pb2.UnsubscribeRequest(email="celina@example.com", reason="no more"), timeout=10)
        public.Unsubscribe(consent_pb2.UnsubscribeRequest(email="ala@example.com"), timeout=10)
        public.Unsubscribe(consent_pb2.UnsubscribeRequest(email="darek@example.com"), timeout=10)
        tampered = Ledger(running, consent_pb2_grpc.ConsentAdminStub(channel), unsubscribe_seq=len(PEOPLE) + 1)
        tampered.checkpoint()
        untouched = tampered.admin.VerifyLedger(consent_pb2.VerifyLedgerRequest(), timeout=60)
        assert untouched.ok and untouched.checkpoint_seq == len(PEOPLE) + 3, untouched.problem
        assert untouched.truncation_window_s >= 300
        assert tampered.verify_command().returncode == 0
        yield tampered


def test_a_cut_tail_covered_by_a_checkpoint_is_found(ledger):
    rows = ledger.rows()
    keep = len(rows) - 3
    ledger.sql(
        ("DELETE FROM ledger_entries WHERE seq > %s", (keep,)),
        ("UPDATE ledger_head SET seq = %s, entry_hash = %s WHERE id = 1", (keep, rows[keep - 1]["entry_hash"])),
    )
    answer = ledger.assert_broken_at(keep + 1)
    assert "cut" in answer.problem and answer.checkpoint_seq == len(rows)


@pytest.mark.parametrize("unkeyed", [False, True], ids=["sha256-keeping-key-id", "old-unkeyed-scheme"])
def test_an_unsubscribe_turned_into_an_opt_in_and_rechained_is_found(ledger, unkeyed):
    rows = ledger.rows()
    index = ledger.unsubscribe_seq - 1
    assert rows[index]["action"] == "unsubscribe"
    rows[index]["action"], rows[index]["marketing_consent"] = "opt-in", True
    subject = rows[index]["subject_id"]
    ledger.sql(
        *_attacker_rechain(rows, index, unkeyed),
        ("UPDATE consent_state SET marketing_consent = true, last_action = 'opt-in' WHERE subject_id = %s",
         (subject,)),
    )
    ledger.assert_broken_at(ledger.unsubscribe_seq)


@pytest.mark.parametrize("unkeyed", [False, True], ids=["sha256-keeping-key-id", "old-unkeyed-scheme"])
def test_an_entry_deleted_and_the_rest_renumbered_and_rechained_is_found(ledger, unkeyed):
    rows = ledger.rows()
    index = ledger.unsubscribe_seq - 1
    later = rows[index + 1:]
    for row in later:
        row["seq"] = int(str(row["seq"])) - 1
    renumber = [("UPDATE ledger_entries SET seq = seq - 1 WHERE seq = %s", (int(str(row["seq"])) + 1,))
                for row in later]
    ledger.sql(
        ("DELETE FROM ledger_entries WHERE seq = %s", (ledger.unsubscribe_seq,)),
        *renumber,
        *_attacker_rechain(rows[:index] + later, index, unkeyed),
        ("UPDATE consent_state SET last_seq = last_seq - 1 WHERE last_seq > %s", (ledger.unsubscribe_seq,)),
        ("UPDATE consent_state SET marketing_consent = true, last_action = 'opt-in', last_seq = %s "
         "WHERE subject_id = %s", (rows[2]["seq"], rows[index]["subject_id"])),
    )
    ledger.assert_broken_at(ledger.unsubscribe_seq)


@pytest.mark.parametrize("also_point_at_the_opt_in", [False, True])
def test_marketing_switched_on_in_consent_state_after_an_unsubscribe_is_found(ledger, also_point_at_the_opt_in):
    rows = ledger.rows()
    unsubscribe = rows[ledger.unsubscribe_seq - 1]
    subject = unsubscribe["subject_id"]
    opt_in = next(row for row in rows if row["subject_id"] == subject and row["action"] == "opt-in")
    statement = "UPDATE consent_state SET marketing_consent = true WHERE subject_id = %s"
    params: tuple[object, ...] = (subject,)
    if also_point_at_the_opt_in:
        statement = ("UPDATE consent_state SET marketing_consent = true, last_action = 'opt-in', last_seq = %s "
                     "WHERE subject_id = %s")
        params = (opt_in["seq"], subject)
    ledger.sql((statement, params))
    answer = ledger.assert_broken_at(ledger.unsubscribe_seq)
    assert list(answer.state_mismatches) == [subject]
    assert "consent_state" in answer.problem
