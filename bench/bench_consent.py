"""Consent ledger on PostgreSQL: appends per second, and the time VerifyLedger takes for 100,000 and 1,000,000 entries.

Appends go through the domain (validation, subject key, AES-GCM of the personal fields, hash chain, current state)
from concurrent callers into one replica's group-committing writer, and from one caller at a time. For
verification a valid keyed chain is bulk-loaded with COPY and a checkpoint of it signed (untimed), then the domain's
verify() walks it (chain keys, links, the checkpoint, and the current states replayed). Everything lives in a
private schema that is dropped afterwards. Targets: >= 2,000 appends/s; 1,000,000 verified in <= 10 s.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

from services.consent.chain import GENESIS_HASH, HASHED_COLUMNS, ChainKeys
from services.consent.ledger_keys import LedgerKeys
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.request_context import Caller
from testsupport.consent import consent_service, fresh_ledger_keys, migrated_database

CALLERS = 16            # the server's default gRPC worker threads
APPENDS = 6000          # per concurrent run
SEQUENTIAL_APPENDS = 1000
TIME_LIMIT_S = 30.0     # per append run
VERIFY_SIZES = (100_000, 1_000_000)


def _append_rate(db: Database, callers: int, total: int) -> tuple[int, float]:
    consent = consent_service(db)
    origin = Caller("203.0.113.10", "Mozilla/5.0 (bench)")
    per_caller = total // callers
    deadline = time.monotonic() + TIME_LIMIT_S
    done = [0] * callers

    def caller(index: int) -> None:
        for i in range(per_caller):
            if time.monotonic() > deadline:
                return
            consent.unsubscribe(f"bench{index}-{i % 50}@example.com", "bench reason", "", origin)
            done[index] += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    consent.writer.stop()
    return sum(done), elapsed


def _bulk_chain(db: Database, keys: ChainKeys, start_seq: int, prev_hash: str, count: int) -> tuple[int, str]:
    """Append `count` valid entries with COPY (realistically sized ciphertexts); returns the new head."""
    blobs = [os.urandom(n) for n in (12 + 16 + 20, 12 + 16 + 13, 12 + 16 + 60, 12 + 16 + 25)]
    subject = uuid.uuid4().hex
    columns = (*HASHED_COLUMNS, "entry_hash")
    recorded_at = utcnow()
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY ledger_entries ({', '.join(columns)}) FROM STDIN") as copy:
            seq = start_seq
            for _ in range(count):
                seq += 1
                row = [seq, recorded_at, "unsubscribe", subject, True, False, "", "", "", "", "", None,
                       *blobs, prev_hash, keys.current_id, None]
                prev_hash = keys.entry_hash(row) or ""
                row.append(prev_hash)
                copy.write_row(row)
        cursor.execute("UPDATE ledger_head SET seq = %s, entry_hash = %s WHERE id = 1", (seq, prev_hash))
        raw.commit()
        # What autovacuum does to a live table soon after: hint bits set, statistics current.
        driver = raw.driver_connection
        assert driver is not None  # a pooled connection that is open has its driver connection
        driver.autocommit = True
        driver.execute("VACUUM ANALYZE ledger_entries")
        driver.autocommit = False
    finally:
        raw.close()
    return seq, prev_hash


def main() -> None:
    with migrated_database("postgres", None) as db:
        count, elapsed = _append_rate(db, CALLERS, APPENDS)
        print(f"consent ledger appends, {CALLERS} concurrent callers, one replica: {count / elapsed:,.0f} appends/s "
              f"({count} in {elapsed:.2f} s; target >= 2,000/s)")
        count, elapsed = _append_rate(db, 1, SEQUENTIAL_APPENDS)
        print(f"consent ledger appends, one caller at a time: {count / elapsed:,.0f} appends/s "
              f"({count} in {elapsed:.2f} s; one commit each)")

    with migrated_database("postgres", None) as db:
        keys: LedgerKeys = fresh_ledger_keys()
        consent = consent_service(db, keys=keys)
        seq, head = 0, GENESIS_HASH
        for size in VERIFY_SIZES:
            seq, head = _bulk_chain(db, keys.chain, seq, head, size - seq)
            consent.integrity.checkpoint()
            started = time.perf_counter()
            result = consent.verify()
            elapsed = time.perf_counter() - started
            print(f"consent VerifyLedger of {result.entries_checked:,} entries: {elapsed:.2f} s "
                  f"({'ok' if result.ok else 'BROKEN at ' + str(result.first_bad_seq)}; "
                  f"{result.entries_checked / elapsed:,.0f} entries/s; target for 1,000,000: <= 10 s)")


if __name__ == "__main__":
    main()
