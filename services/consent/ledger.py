"""The hash chain: how an entry is appended under the head lock, and how the whole chain is verified.

entry_hash = SHA-256 over a canonical JSON list of every stored column but entry_hash itself (prev_hash included),
so changing any single field of any row, or removing, inserting or reordering rows, is found by verify().
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from services.consent.storage import GENESIS_HASH, ledger_entries, ledger_head
from services.runtime.db import Database

HASHED_COLUMNS = tuple(c.name for c in ledger_entries.columns if c.name != "entry_hash")
_PREV_INDEX = HASHED_COLUMNS.index("prev_hash")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _canonical(value):
    """One representation per value whatever the database returns (SQLite gives naive UTC datetimes)."""
    if isinstance(value, datetime):
        return (as_utc(value) - _EPOCH) // _MICROSECOND
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def hash_values(values: Sequence) -> str:
    """entry_hash of a row given its HASHED_COLUMNS values, in that order."""
    payload = _ENCODER.encode([_canonical(v) for v in values])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Event:
    """What one append records; personal fields arrive already encrypted."""

    action: str
    subject_id: str
    processing_consent: bool
    marketing_consent: bool
    text_version: str = ""
    source: str = ""
    session_id: str = ""
    conversation_id: str = ""
    lead_id: str = ""
    request_id: str | None = None
    email_enc: bytes | None = None
    client_ip_enc: bytes | None = None
    user_agent_enc: bytes | None = None
    reason_enc: bytes | None = None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


@dataclass
class Appender:
    """The chain head, locked for the current transaction; append() extends it, save() writes it back."""

    connection: Connection
    seq: int
    entry_hash: str
    appended: list[dict] = field(default_factory=list)

    @classmethod
    def locked(cls, connection: Connection) -> "Appender":
        # FOR UPDATE serialises appenders on PostgreSQL; on SQLite, BEGIN IMMEDIATE already has.
        row = connection.execute(
            select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1).with_for_update()
        ).one()
        return cls(connection, row.seq, row.entry_hash)

    def append(self, event: Event) -> dict:
        row = {
            "seq": self.seq + 1,
            "recorded_at": utc_now(),
            **vars(event),
            "prev_hash": self.entry_hash,
        }
        row["entry_hash"] = hash_values([row[name] for name in HASHED_COLUMNS])
        self.connection.execute(ledger_entries.insert(), row)
        self.seq, self.entry_hash = row["seq"], row["entry_hash"]
        self.appended.append(row)
        return row

    def save(self) -> None:
        if self.appended:
            self.connection.execute(
                update(ledger_head).where(ledger_head.c.id == 1).values(seq=self.seq, entry_hash=self.entry_hash)
            )


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries_checked: int
    first_bad_seq: int = 0
    problem: str = ""


def verify_rows(rows: Iterable[Sequence], head_seq: int, head_hash: str) -> Verification:
    """Walk rows (HASHED_COLUMNS values then entry_hash, in seq order) and name the first that does not fit."""
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            return Verification(False, checked, expected_seq, f"entry {expected_seq} is missing (next found: {seq})")
        if hash_values(row[:-1]) != row[-1]:
            return Verification(False, checked, seq, f"entry {seq} does not match its hash (content changed)")
        if row[_PREV_INDEX] != prev_hash:
            return Verification(False, checked, seq, f"entry {seq} does not link to entry {seq - 1}")
        prev_hash, expected_seq, checked = row[-1], seq + 1, checked + 1
    if head_seq > checked:
        return Verification(False, checked, checked + 1, f"entries {checked + 1}..{head_seq} are missing")
    if head_seq < checked:
        return Verification(False, checked, head_seq + 1, f"entries after {head_seq} are not in the ledger head")
    if head_hash != prev_hash:
        return Verification(False, checked, head_seq, f"entry {head_seq} differs from the hash the head recorded")
    return Verification(True, checked)


def verify(db: Database, batch_rows: int = 20000) -> Verification:
    """Verify the whole chain from one consistent snapshot, streaming rows in seq order."""
    columns = [ledger_entries.c[name] for name in (*HASHED_COLUMNS, "entry_hash")]
    options = {"isolation_level": "REPEATABLE READ"} if db.is_postgres else {}
    with db.engine.connect().execution_options(**options) as conn:
        with conn.begin():
            head = conn.execute(select(ledger_head.c.seq, ledger_head.c.entry_hash).where(ledger_head.c.id == 1)).one()
            result = conn.execution_options(yield_per=batch_rows).execute(
                select(*columns).order_by(ledger_entries.c.seq)
            )
            return verify_rows(result, head.seq, head.entry_hash)


def length(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(ledger_head.c.seq).where(ledger_head.c.id == 1)).scalar_one()
