"""Tables of the consent service (the append-only ledger, its head, subject keys, current state, pending
erasures) and every query outside a ledger append: what is on record about a person, and pending erasures.
Appends and verification of the ledger are in ledger_storage (and ledger_postgres, its PostgreSQL fast paths).

Tables carry no schema: on PostgreSQL the connection's search_path (DB_SCHEMA) places them. Schema changes go
through migrations/ only; the ledger's append-only triggers are created there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from services.consent.chain import ENTRY_COLUMNS, Entry
from services.runtime.db import Database
from services.runtime.errors import UnavailableError

metadata = MetaData()

# One row per consent event, never updated or deleted. Personal fields (*_enc) are AES-GCM ciphertexts under the
# subject's key; every column but entry_hash is covered by entry_hash (see chain.hash_values).
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("processing_consent", Boolean, nullable=False),
    Column("marketing_consent", Boolean, nullable=False),
    Column("text_version", String(80), nullable=False),  # a typed label, or "sha256:<hash>" of a consent_texts row
    Column("source", String(64), nullable=False),
    Column("session_id", String(128), nullable=False),
    Column("conversation_id", String(128), nullable=False),
    Column("lead_id", String(128), nullable=False),
    Column("request_id", String(128), nullable=True, unique=True),
    Column("email_enc", LargeBinary, nullable=True),
    Column("client_ip_enc", LargeBinary, nullable=True),
    Column("user_agent_enc", LargeBinary, nullable=True),
    Column("reason_enc", LargeBinary, nullable=True),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("key_id", String(16), nullable=False),  # the chain key of entry_hash ("": unkeyed, before 0004)
    # session, conversation and lead ids (JSON) under the subject's key; before 0004 they were the plain columns.
    Column("references_enc", LargeBinary, nullable=True),
    Column("entry_hash", String(64), nullable=False, unique=True),
)
if tuple(c.name for c in ledger_entries.columns) != ENTRY_COLUMNS:
    raise RuntimeError("ledger_entries columns changed: change chain.hash_values and chain.HASHED_COLUMNS with them")

# The single row (id 1) every append locks: it serialises appends so the chain can never fork.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

# A subject is a person known by the HMAC of their normalised email. Erasure clears subject_hash and wrapped_key:
# the ledger rows keep their random subject_id, which then links to nobody.
subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("subject_hash", String(64), nullable=True, unique=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=True),
)

# Current consent per subject, written in the same transaction as the ledger event that changed it.
consent_state = Table(
    "consent_state",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("processing_consent", Boolean, nullable=False),
    Column("marketing_consent", Boolean, nullable=False),
    Column("last_action", String(32), nullable=False),
    Column("last_action_at", DateTime(timezone=True), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    # When the person made the statement this state holds (NULL before 0002: read as last_action_at).
    Column("stated_at", DateTime(timezone=True), nullable=True),
)
STATE_COLUMNS = tuple(c.name for c in consent_state.columns if c.name != "subject_id")

# Each consent wording a person was shown, once, under the SHA-256 (hex) of its exact text; ledger entries reference
# it as text_version "sha256:<text_hash>".
consent_texts = Table(
    "consent_texts",
    metadata,
    Column("text_hash", String(64), primary_key=True),
    Column("language", String(16), nullable=False),
    Column("wording", Text, nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
)

# Erasure requested from the chat service after a revoke; retried until chat confirms, then the key is destroyed.
pending_erasures = Table(
    "pending_erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("email_enc", LargeBinary, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_error", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("subject_id", name="uq_pending_erasures_subject"),
)

# One row per erasure (after a revoke, or of a person who gave only a phone), kept after the subject's key is
# destroyed so the erasure can be proven: lookup_hash is a keyed hash of the email under its own label (never the
# subjects' hash, so the two tables do not join), NULL for an erasure by phone, found by its request id instead.
erasure_records = Table(
    "erasure_records",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("lookup_hash", String(64), nullable=True, index=True),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)

# What each step of an erasure did in one system and when: counts and references, never personal data.
# `reference` names what can be asked again for a live status (the notifier's erasure id).
erasure_steps = Table(
    "erasure_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("system", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", String(300), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("request_id", "system", "action", name="uq_erasure_steps_step"),
)

# Verified requests (verification.py): each emailed action token is used once; its id is kept until it expires.
used_action_tokens = Table(
    "used_action_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# One row per verification email sent, by the keyed hash of the address (never the address): the throttle counts
# them. Rows older than the throttle's window are deleted as new ones are added.
verification_emails = Table(
    "verification_emails",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address_hash", String(64), nullable=False, index=True),
    Column("sent_at", DateTime(timezone=True), nullable=False, index=True),
)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@contextlib.contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """A lost or unreachable database answers UNAVAILABLE: the caller may retry, nothing half-done was kept."""
    try:
        yield
    except OperationalError:
        raise UnavailableError("the consent database is unavailable; retry shortly") from None


# --- what is on record about a person --------------------------------------------------------------------------

class ConsentState(TypedDict):
    """A consent_state row."""

    subject_id: str
    processing_consent: bool
    marketing_consent: bool
    last_action: str
    last_action_at: datetime
    last_seq: int
    stated_at: datetime  # when the person made the statement; a statement older than this leaves the state alone


class ConsentRecords:
    """Reads of a person's record outside any append: current state, ledger entries, key."""

    def __init__(self, db: Database):
        self.db = db

    def state(self, subject_hash: str) -> ConsentState | None:
        """The current consent of the live subject with this keyed hash; None when nothing is on record."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(consent_state)
                .join(subjects, subjects.c.subject_id == consent_state.c.subject_id)
                .where(subjects.c.subject_hash == subject_hash)
            ).first()
        if row is None:
            return None
        return ConsentState(
            subject_id=row.subject_id, processing_consent=row.processing_consent,
            marketing_consent=row.marketing_consent, last_action=row.last_action,
            last_action_at=aware(row.last_action_at), last_seq=row.last_seq,
            stated_at=aware(row.stated_at or row.last_action_at),
        )

    def subject_hash(self, subject_id: str) -> str | None:
        """The keyed hash of a live subject; None when the id is unknown or the subject was erased."""
        with self.db.engine.connect() as conn:
            found: str | None = conn.execute(
                select(subjects.c.subject_hash).where(subjects.c.subject_id == subject_id)
            ).scalar_one_or_none()
        return found

    def subject_id(self, subject_hash: str) -> str | None:
        """The id of the live subject with this keyed hash, or None."""
        with self.db.engine.connect() as conn:
            found: str | None = conn.execute(
                select(subjects.c.subject_id).where(subjects.c.subject_hash == subject_hash)
            ).scalar_one_or_none()
        return found

    def entries(self, subject_hash: str) -> tuple[str, bytes | None, list[Entry]] | None:
        """(subject_id, wrapped_key, entries in ledger order) of the live subject with this keyed hash, or None."""
        with self.db.engine.connect() as conn:
            subject = conn.execute(
                select(subjects.c.subject_id, subjects.c.wrapped_key).where(subjects.c.subject_hash == subject_hash)
            ).first()
            if subject is None:
                return None
            rows = conn.execute(
                select(ledger_entries)
                .where(ledger_entries.c.subject_id == subject.subject_id)
                .order_by(ledger_entries.c.seq)
            ).all()
        entries = [Entry(**{**row._mapping, "recorded_at": aware(row.recorded_at)}) for row in rows]  # type: ignore[typeddict-item]  # the table's columns are ENTRY_COLUMNS, checked at import
        return subject.subject_id, subject.wrapped_key, entries



# --- pending erasures ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DueErasure:
    id: int
    subject_id: str
    request_id: str
    email_enc: bytes | None
    attempts: int
    created_at: datetime
    wrapped_key: bytes | None


@dataclass(frozen=True)
class PendingSummary:
    pending: int
    oldest_created_at: datetime | None
    most_attempts: int


class PendingErasures:
    """Every query of pending_erasures. A revoke queues one in its ledger transaction; the erasure worker reads the
    due ones, records failed attempts, and closes each in the ledger transaction that records its completion."""

    def __init__(self, db: Database):
        self.db = db

    # --- inside a ledger transaction ---

    @staticmethod
    def queue(conn: Connection, subject_id: str, request_id: str, email_enc: bytes | None, now: datetime) -> None:
        """One pending erasure per subject, ever: nothing is added while the subject has one."""
        already = conn.execute(
            select(pending_erasures.c.id).where(pending_erasures.c.subject_id == subject_id)
        ).first()
        if already is not None:
            return
        conn.execute(
            pending_erasures.insert().values(
                subject_id=subject_id, request_id=request_id, email_enc=email_enc, attempts=0,
                next_attempt_at=now, last_error="", created_at=now,
            )
        )

    @staticmethod
    def in_progress(conn: Connection, subject_id: str) -> bool:
        """Whether the subject has an erasure not yet completed."""
        pending = conn.execute(
            select(pending_erasures.c.id).where(
                pending_erasures.c.subject_id == subject_id, pending_erasures.c.completed_at.is_(None)
            )
        ).first()
        return pending is not None

    @staticmethod
    def close(conn: Connection, pending_id: int, now: datetime) -> bool:
        """Mark the erasure completed and drop its email ciphertext; False when it already was (by another replica)."""
        result = conn.execute(
            update(pending_erasures)
            .where(pending_erasures.c.id == pending_id, pending_erasures.c.completed_at.is_(None))
            .values(completed_at=now, email_enc=None, attempts=pending_erasures.c.attempts + 1, last_error="")
        )
        return result.rowcount == 1

    # --- on their own connections ---

    def due(self, now: datetime, limit: int) -> list[DueErasure]:
        """Open erasures whose next attempt is due, soonest first, with their subject's wrapped key."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(pending_erasures.c.id, pending_erasures.c.subject_id, pending_erasures.c.request_id,
                       pending_erasures.c.email_enc, pending_erasures.c.attempts, pending_erasures.c.created_at,
                       subjects.c.wrapped_key)
                .join(subjects, subjects.c.subject_id == pending_erasures.c.subject_id)
                .where(pending_erasures.c.completed_at.is_(None), pending_erasures.c.next_attempt_at <= now)
                .order_by(pending_erasures.c.next_attempt_at)
                .limit(limit)
            ).all()
        return [DueErasure(row.id, row.subject_id, row.request_id, row.email_enc, row.attempts,
                           aware(row.created_at), row.wrapped_key) for row in rows]

    def record_failure(self, pending_id: int, attempts: int, next_attempt_at: datetime, error: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(pending_erasures)
                .where(pending_erasures.c.id == pending_id)
                .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:200])
            )

    def next_due(self) -> datetime | None:
        """When the soonest open erasure is due; None when none is open."""
        with self.db.engine.connect() as conn:
            due: datetime | None = conn.execute(
                select(func.min(pending_erasures.c.next_attempt_at)).where(pending_erasures.c.completed_at.is_(None))
            ).scalar_one_or_none()
        return None if due is None else aware(due)

    def summary(self) -> PendingSummary:
        with self.db.engine.connect() as conn:
            count, oldest, most_attempts = conn.execute(
                select(func.count(), func.min(pending_erasures.c.created_at), func.max(pending_erasures.c.attempts))
                .where(pending_erasures.c.completed_at.is_(None))
            ).one()
        return PendingSummary(count, None if oldest is None else aware(oldest), most_attempts or 0)

    def open_for_subject(self, subject_hash: str) -> tuple[str, datetime] | None:
        """(request id, requested at) of the live subject's open erasure; None when there is none."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(pending_erasures.c.request_id, pending_erasures.c.created_at)
                .join(subjects, subjects.c.subject_id == pending_erasures.c.subject_id)
                .where(subjects.c.subject_hash == subject_hash, pending_erasures.c.completed_at.is_(None))
            ).first()
        return None if row is None else (row.request_id, aware(row.created_at))


# --- what each erasure did, for its report -------------------------------------------------------------------

@dataclass(frozen=True)
class ErasureRecord:
    request_id: str
    kind: str  # "email" (after a revoke) or "phone" (a person who gave only a phone)
    requested_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class StoredStep:
    system: str
    action: str
    outcome: str
    detail: str
    reference: str
    at: datetime


class ErasureRecords:
    """erasure_records and erasure_steps: an erasure is opened once, each step's latest outcome replaces the
    previous one (a retried step is one row), and the last step closes it, in the ledger's transaction when it
    destroys the key."""

    def __init__(self, db: Database):
        self.db = db

    def open(self, request_id: str, kind: str, lookup_hash: str | None, requested_at: datetime) -> None:
        with self.db.engine.begin() as conn:
            known = conn.execute(
                select(erasure_records.c.request_id).where(erasure_records.c.request_id == request_id)
            ).first()
            if known is not None:
                return
            try:
                with conn.begin_nested():
                    conn.execute(erasure_records.insert().values(
                        request_id=request_id, kind=kind, lookup_hash=lookup_hash, requested_at=requested_at,
                    ))
            except IntegrityError:
                pass  # opened at the same moment by another replica

    def record_step(self, request_id: str, step: StoredStep, conn: Connection | None = None) -> None:
        """Insert or replace the step (request, system, action); on `conn` to join a transaction."""
        if conn is None:
            with self.db.engine.begin() as own:
                self.record_step(request_id, step, own)
            return
        values = {"outcome": step.outcome, "detail": step.detail[:300], "reference": step.reference, "at": step.at}
        where = (erasure_steps.c.request_id == request_id, erasure_steps.c.system == step.system,
                 erasure_steps.c.action == step.action)
        if conn.execute(update(erasure_steps).where(*where).values(**values)).rowcount:
            return
        try:
            with conn.begin_nested():
                conn.execute(erasure_steps.insert().values(
                    request_id=request_id, system=step.system, action=step.action, **values))
        except IntegrityError:
            conn.execute(update(erasure_steps).where(*where).values(**values))

    @staticmethod
    def close(conn: Connection, request_id: str, now: datetime) -> None:
        conn.execute(
            update(erasure_records)
            .where(erasure_records.c.request_id == request_id, erasure_records.c.completed_at.is_(None))
            .values(completed_at=now)
        )

    def steps(self, request_id: str) -> list[StoredStep]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(erasure_steps.c.system, erasure_steps.c.action, erasure_steps.c.outcome,
                       erasure_steps.c.detail, erasure_steps.c.reference, erasure_steps.c.at)
                .where(erasure_steps.c.request_id == request_id)
                .order_by(erasure_steps.c.at, erasure_steps.c.id)
            ).all()
        return [StoredStep(r.system, r.action, r.outcome, r.detail, r.reference, aware(r.at)) for r in rows]

    def by_request(self, request_id: str) -> ErasureRecord | None:
        return self._find(erasure_records.c.request_id == request_id)

    def latest_by_lookup(self, lookup_hash: str) -> ErasureRecord | None:
        """The newest erasure of the person with this lookup hash (a person erased, back, and erased again)."""
        return self._find(erasure_records.c.lookup_hash == lookup_hash)

    def _find(self, condition: ColumnElement[bool]) -> ErasureRecord | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(erasure_records).where(condition).order_by(erasure_records.c.requested_at.desc()).limit(1)
            ).first()
        if row is None:
            return None
        completed = None if row.completed_at is None else aware(row.completed_at)
        return ErasureRecord(row.request_id, row.kind, aware(row.requested_at), completed)


# --- verified requests ---------------------------------------------------------------------------------------

class ActionRecords:
    """Used action tokens and the verification emails sent per address (for the throttle)."""

    def __init__(self, db: Database):
        self.db = db

    def use(self, token_id: str, action: str, expires_at: datetime, now: datetime) -> bool:
        """Mark a token used; False when it already was. Ids of tokens past their expiry are dropped here: an
        expired token is refused before its id is looked at."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(used_action_tokens).where(used_action_tokens.c.expires_at < now))
            try:
                with conn.begin_nested():
                    conn.execute(used_action_tokens.insert().values(
                        token_id=token_id, action=action, used_at=now, expires_at=expires_at,
                    ))
            except IntegrityError:
                return False
        return True

    def release(self, token_id: str) -> None:
        """Make a token usable again: its action could not be carried out (the database went away meanwhile)."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(used_action_tokens).where(used_action_tokens.c.token_id == token_id))

    def is_used(self, token_id: str) -> bool:
        with self.db.engine.connect() as conn:
            found = conn.execute(
                select(used_action_tokens.c.token_id).where(used_action_tokens.c.token_id == token_id)
            ).first()
        return found is not None

    def emails_since(self, address_hash: str, since: datetime) -> int:
        with self.db.engine.connect() as conn:
            count: int = conn.execute(
                select(func.count()).where(
                    verification_emails.c.address_hash == address_hash, verification_emails.c.sent_at >= since
                )
            ).scalar_one()
        return count

    def record_email(self, address_hash: str, now: datetime, forget_before: datetime) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(delete(verification_emails).where(verification_emails.c.sent_at < forget_before))
            conn.execute(verification_emails.insert().values(address_hash=address_hash, sent_at=now))


# --- consent wordings ----------------------------------------------------------------------------------------

class ConsentTexts:
    """The stored consent wordings (consent_texts), each once under the SHA-256 of its exact text."""

    def __init__(self, db: Database):
        self.db = db

    @staticmethod
    def keep(conn: Connection, text_hash: str, language: str, wording: str, now: datetime) -> None:
        """Store a wording unless it already is (inside the ledger transaction of the entry that references it)."""
        known = conn.execute(select(consent_texts.c.text_hash).where(consent_texts.c.text_hash == text_hash)).first()
        if known is None:
            conn.execute(consent_texts.insert().values(
                text_hash=text_hash, language=language, wording=wording, first_seen=now,
            ))

    def find(self, text_hashes: set[str]) -> dict[str, tuple[str, str]]:
        """(language, wording) by text hash, for those stored."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(consent_texts.c.text_hash, consent_texts.c.language, consent_texts.c.wording)
                .where(consent_texts.c.text_hash.in_(text_hashes))
            ).all()
        return {text_hash: (language, wording) for text_hash, language, wording in rows}
