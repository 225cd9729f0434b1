"""Every erasure recorded outside the database, so it can be re-applied after the database is restored from a backup
taken before it (docs/privacy/erasure.md).

A restored database holds again the people erased after its backup was taken: their chat records, the notifier's
deliveries and, in this service, their subject with its keyed hash and key. The journal is one small JSON file per
erasure under CONSENT_ERASURE_JOURNAL_DIR (default DATA_DIR/erasure-journal; in Kubernetes a volume that is not in the
database's backups), written before the erasure is recorded complete: its request id, its kind, when, and for an
erasure by email the keyed hash the subjects table held for the address (an HMAC under CONSENT_HMAC_KEY, which the
database never holds). No email, phone or name is in it. `manage reapply-erasures` finds each person the restored
database holds by that hash and erases them again through the usual steps; an erasure by phone is listed for the
operator to repeat from its ticket (the phone is in no journal).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.consent.consent import ConsentService
from services.consent.crypto import KeyDestroyed, SubjectCrypto
from services.consent.storage import ConsentRecords, ErasureRecords

REAPPLY_REASON = "erasure re-applied after a database restore"


@dataclass(frozen=True)
class JournalEntry:
    request_id: str
    kind: str                  # "email" or "phone"
    subject_hash: str | None   # the subjects table's keyed hash of the address; None for an erasure by phone
    completed_at: datetime

    def to_json(self) -> str:
        return json.dumps({"request_id": self.request_id, "kind": self.kind, "subject_hash": self.subject_hash,
                           "completed_at": self.completed_at.isoformat()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JournalEntry:
        data = json.loads(text)
        return cls(data["request_id"], data["kind"], data["subject_hash"],
                   datetime.fromisoformat(data["completed_at"]))


class ErasureJournal:
    def __init__(self, directory: Path):
        self.directory = directory

    def _path(self, request_id: str) -> Path:
        return self.directory / f"{hashlib.sha256(request_id.encode()).hexdigest()[:32]}.json"

    def record(self, entry: JournalEntry) -> None:
        """Write the entry once (a retried erasure keeps the first); atomic, so a reader never sees half a file."""
        path = self._path(entry.request_id)
        if path.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(entry.to_json())
        os.replace(partial, path)

    def entries(self) -> list[JournalEntry]:
        """Every recorded erasure, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [JournalEntry.from_json(p.read_text()) for p in self.directory.glob("*.json")]
        return sorted(found, key=lambda e: (e.completed_at, e.request_id))


@dataclass(frozen=True)
class Reapplied:
    """What `reapply` did about each journal entry the restored database does not know."""

    requeued: list[tuple[str, str]]   # (journal request id, the revoke's request id that erases the person again)
    by_phone: list[str]               # erasures by phone: repeat ErasePhoneOnly from the ticket with this request id
    not_found: list[str]              # erasures by email of a person the restored database does not hold


class ErasureReapplier:
    """After a restore: queue again, as revokes, the erasures the restored database lost; the erasure worker then
    carries them out through the usual steps."""

    def __init__(self, journal: ErasureJournal, erasures: ErasureRecords, consent: ConsentService,
                 crypto: SubjectCrypto):
        self.journal = journal
        self.erasures = erasures
        self.consent = consent
        self.crypto = crypto

    def run(self) -> Reapplied:
        records = ConsentRecords(self.erasures.db)
        requeued: list[tuple[str, str]] = []
        by_phone: list[str] = []
        not_found: list[str] = []
        entries = self.journal.entries()
        known = {e.request_id for e in entries if self.erasures.by_request(e.request_id) is not None}
        # the restored database has these erasures: taken after them, or re-applied (the re-erasure is journalled)
        settled = {e.subject_hash for e in entries if e.request_id in known}
        for entry in entries:
            if entry.request_id in known or (entry.subject_hash is not None and entry.subject_hash in settled):
                continue
            if entry.kind == "phone" or entry.subject_hash is None:
                by_phone.append(entry.request_id)
                continue
            email = _email_on_record(records, self.crypto, self.consent, entry.subject_hash)
            if email is None:
                not_found.append(entry.request_id)
                continue
            revoke_id = f"reapply:{entry.request_id}"[:128]  # the same again is one revoke
            self.consent.revoke(email, reason=REAPPLY_REASON, request_id=revoke_id)
            requeued.append((entry.request_id, revoke_id))
        return Reapplied(requeued, by_phone, not_found)


def _email_on_record(records: ConsentRecords, crypto: SubjectCrypto, consent: ConsentService,
                     subject_hash: str) -> str | None:
    found = records.entries(subject_hash)
    if found is None:
        return None
    subject_id, wrapped_key, entries = found
    try:
        key = crypto.unwrap(subject_id, wrapped_key)
    except KeyDestroyed:
        return None
    for entry in reversed(entries):
        email = consent.decrypt_entry(entry, key)["email"]
        if email:
            return email
    return None
