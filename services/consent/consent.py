"""Consent changes and questions: opt-in, unsubscribe, revoke, status, export. No gRPC types here.

Every change is one ledger event plus the subject's current state, written in the same transaction. An email
with nothing on record answers exactly like any other unknown address: both consents off, no last action.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from services.consent import ledger, validation
from services.consent.crypto import SubjectCrypto
from services.consent.ledger import Appender, Event, Verification, as_utc, utc_now
from services.consent.storage import consent_state, ledger_entries, pending_erasures, subjects
from services.consent.writer import LedgerWriter
from services.runtime.db import Database
from services.runtime.errors import UnavailableError, ValidationError
from services.runtime.request_context import Caller

OPT_IN, UNSUBSCRIBE, REVOKE, ERASURE_COMPLETED = "opt-in", "unsubscribe", "revoke", "erasure-completed"
PERSONAL_FIELDS = ("email", "client_ip", "user_agent", "reason")


@dataclass(frozen=True)
class Status:
    email: str
    processing_consent: bool = False
    marketing_consent: bool = False
    last_action: str = ""
    last_action_at: datetime | None = None


@dataclass(frozen=True)
class ExportedEntry:
    seq: int
    action: str
    recorded_at: datetime
    text_version: str
    source: str
    client_ip: str
    user_agent: str
    reason: str
    session_id: str
    conversation_id: str
    lead_id: str
    request_id: str
    processing_consent: bool
    marketing_consent: bool
    entry_hash: str
    prev_hash: str


@dataclass(frozen=True)
class Subject:
    subject_id: str
    key: bytes


def _status_from(email: str, state) -> Status:
    """The answer for a consent_state row; None (nothing on record, or erased) answers as for anyone unknown."""
    if state is None:
        return Status(email)
    return Status(
        email, state["processing_consent"], state["marketing_consent"], state["last_action"],
        as_utc(state["last_action_at"]),
    )


class ConsentService:
    def __init__(
        self,
        db: Database,
        crypto: SubjectCrypto,
        writer: LedgerWriter,
        on_erasure_requested: Callable[[], None] = lambda: None,
    ):
        self.db = db
        self.crypto = crypto
        self.writer = writer
        self.on_erasure_requested = on_erasure_requested

    # --- changes -----------------------------------------------------------------------------------------

    def unsubscribe(self, email: str, reason: str = "", request_id: str = "", origin: Caller = Caller()) -> Status:
        """Marketing off at once (Art. 21); processing consent stays as it was."""
        return self._change(
            UNSUBSCRIBE, email, request_id, origin,
            reason=validation.reason(reason),
            rule=lambda processing, _marketing: (processing, False),
        )

    def revoke(self, email: str, reason: str = "", request_id: str = "", origin: Caller = Caller()) -> Status:
        """Processing and marketing off, and erasure in the chat service queued in the same transaction."""
        status = self._change(
            REVOKE, email, request_id, origin,
            reason=validation.reason(reason),
            rule=lambda _processing, _marketing: (False, False),
            after=self._queue_erasure,
        )
        self.on_erasure_requested()
        return status

    def record_consent(
        self,
        email: str,
        processing_consent: bool,
        marketing_consent: bool,
        text_version: str,
        source: str,
        session_id: str = "",
        conversation_id: str = "",
        lead_id: str = "",
        request_id: str = "",
        origin: Caller = Caller(),
    ) -> Status:
        """An opt-in collected by the chat service, with the consent text version and where it was given."""
        if not processing_consent:
            raise ValidationError("processing_consent must be true: an opt-in without it records nothing")
        context = {
            "text_version": validation.identifier("text_version", text_version, validation.MAX_SHORT, required=True),
            "source": validation.identifier("source", source, validation.MAX_SHORT, required=True),
            "session_id": validation.identifier("session_id", session_id),
            "conversation_id": validation.identifier("conversation_id", conversation_id),
            "lead_id": validation.identifier("lead_id", lead_id),
        }
        return self._change(
            OPT_IN, email, request_id, origin,
            context=context,
            rule=lambda processing, marketing: (True, marketing or marketing_consent),
            before=self._refuse_during_erasure,
        )

    def _change(self, action, email, request_id, origin, rule, reason="", context=None, before=None, after=None):
        email = validation.normalise_email(email)
        request_id = validation.identifier("request_id", request_id) or None
        client_ip = validation.client_ip(origin.client_ip)
        user_agent = validation.user_agent(origin.user_agent)
        subject_hash = self.crypto.subject_hash(email)

        def work(conn: Connection, appender: Appender) -> Status:
            if request_id is not None:
                replayed = self._replay(appender, request_id, action, subject_hash, email)
                if replayed is not None:
                    return replayed
            subject = self._subject(appender, subject_hash)
            if before is not None:
                before(conn, subject)
            current = appender.state(subject.subject_id)
            processing, marketing = rule(
                *((current["processing_consent"], current["marketing_consent"]) if current else (False, False))
            )
            encrypt = self.crypto.encrypt
            row = appender.append(
                Event(
                    action=action,
                    subject_id=subject.subject_id,
                    processing_consent=processing,
                    marketing_consent=marketing,
                    request_id=request_id,
                    email_enc=encrypt(subject.key, subject.subject_id, "email", email),
                    client_ip_enc=encrypt(subject.key, subject.subject_id, "client_ip", client_ip),
                    user_agent_enc=encrypt(subject.key, subject.subject_id, "user_agent", user_agent),
                    reason_enc=encrypt(subject.key, subject.subject_id, "reason", reason),
                    **(context or {}),
                )
            )
            appender.set_state(
                subject.subject_id,
                {
                    "processing_consent": processing,
                    "marketing_consent": marketing,
                    "last_action": action,
                    "last_action_at": row["recorded_at"],
                    "last_seq": row["seq"],
                },
            )
            if after is not None:
                after(conn, subject, email)
            return Status(email, processing, marketing, action, row["recorded_at"])

        with self._database_errors():
            return self.writer.run(work, subject_hash=subject_hash, request_id=request_id)

    def _replay(self, appender, request_id, action, subject_hash, email) -> Status | None:
        """A retried request: answer with the current status and record nothing new."""
        earlier = appender.find_request(request_id)
        if earlier is None:
            return None
        earlier_action, earlier_subject = earlier
        subject_id = (appender.subject(subject_hash) or (None,))[0]
        if earlier_action != action or subject_id not in (None, earlier_subject):
            raise ValidationError("request_id was already used for a different request")
        return _status_from(email, appender.state(subject_id) if subject_id else None)

    def _subject(self, appender: Appender, subject_hash: str) -> Subject:
        """The subject with this keyed hash, created with a fresh key on first sight (or after erasure)."""
        known = appender.subject(subject_hash)
        if known is not None:
            subject_id, wrapped = known
            return Subject(subject_id, self.crypto.unwrap(subject_id, wrapped))
        subject_id = uuid.uuid4().hex
        key, wrapped = self.crypto.new_subject_key(subject_id)
        appender.add_subject(subject_hash, subject_id, wrapped)
        return Subject(subject_id, key)

    def _queue_erasure(self, conn: Connection, subject: Subject, email: str) -> None:
        """One pending erasure per subject, with its own id: chat carries out an erasure id once."""
        already = conn.execute(
            select(pending_erasures.c.id).where(pending_erasures.c.subject_id == subject.subject_id)
        ).first()
        if already is not None:
            return
        now = utc_now()
        conn.execute(
            pending_erasures.insert().values(
                subject_id=subject.subject_id,
                request_id=f"erase-{uuid.uuid4().hex}",
                email_enc=self.crypto.encrypt(subject.key, subject.subject_id, "pending_email", email),
                attempts=0,
                next_attempt_at=now,
                last_error="",
                created_at=now,
            )
        )

    @staticmethod
    def _refuse_during_erasure(conn: Connection, subject: Subject) -> None:
        pending = conn.execute(
            select(pending_erasures.c.id).where(
                and_(pending_erasures.c.subject_id == subject.subject_id, pending_erasures.c.completed_at.is_(None))
            )
        ).first()
        if pending is not None:
            raise UnavailableError("this person's erasure is in progress; record the consent again shortly")

    @contextmanager
    def _database_errors(self):
        try:
            yield
        except OperationalError:
            raise UnavailableError("the consent database is unavailable; retry shortly") from None

    # --- questions ---------------------------------------------------------------------------------------

    def status(self, email: str) -> Status:
        email = validation.normalise_email(email)
        with self._database_errors(), self.db.engine.connect() as conn:
            return self._status(conn, email, self.crypto.subject_hash(email))

    @staticmethod
    def _status(conn: Connection, email: str, subject_hash: str) -> Status:
        row = conn.execute(
            select(consent_state)
            .join(subjects, subjects.c.subject_id == consent_state.c.subject_id)
            .where(subjects.c.subject_hash == subject_hash)
        ).first()
        return _status_from(email, row._mapping if row is not None else None)

    def export(self, email: str) -> tuple[str, list[ExportedEntry]]:
        """Everything recorded about one person, decrypted, in ledger order (Art. 15)."""
        email = validation.normalise_email(email)
        with self._database_errors(), self.db.engine.connect() as conn:
            subject = conn.execute(
                select(subjects.c.subject_id, subjects.c.wrapped_key).where(
                    subjects.c.subject_hash == self.crypto.subject_hash(email)
                )
            ).first()
            if subject is None:
                return email, []
            rows = conn.execute(
                select(ledger_entries)
                .where(ledger_entries.c.subject_id == subject.subject_id)
                .order_by(ledger_entries.c.seq)
            ).all()
        key = self.crypto.unwrap(subject.subject_id, subject.wrapped_key)
        return email, [self._exported(row, key) for row in rows]

    def decrypt_entry(self, row, key: bytes | None) -> dict[str, str]:
        """The personal fields of one ledger row; raises KeyDestroyed once the subject was erased."""
        return {
            name: self.crypto.decrypt(key, row.subject_id, name, getattr(row, f"{name}_enc"))
            for name in PERSONAL_FIELDS
        }

    def _exported(self, row, key: bytes) -> ExportedEntry:
        personal = self.decrypt_entry(row, key)
        return ExportedEntry(
            seq=row.seq,
            action=row.action,
            recorded_at=as_utc(row.recorded_at),
            text_version=row.text_version,
            source=row.source,
            client_ip=personal["client_ip"],
            user_agent=personal["user_agent"],
            reason=personal["reason"],
            session_id=row.session_id,
            conversation_id=row.conversation_id,
            lead_id=row.lead_id,
            request_id=row.request_id or "",
            processing_consent=row.processing_consent,
            marketing_consent=row.marketing_consent,
            entry_hash=row.entry_hash,
            prev_hash=row.prev_hash,
        )

    def verify(self) -> Verification:
        with self._database_errors():
            return ledger.verify(self.db)

    def ledger_length(self) -> int:
        return ledger.length(self.db)

    def subject_key(self, subject_id: str) -> bytes:
        """The current key of a subject; KeyDestroyed after erasure."""
        with self.db.engine.connect() as conn:
            wrapped = conn.execute(
                select(subjects.c.wrapped_key).where(subjects.c.subject_id == subject_id)
            ).scalar_one_or_none()
        return self.crypto.unwrap(subject_id, wrapped)

