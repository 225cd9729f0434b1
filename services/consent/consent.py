"""Consent changes and questions: opt-in, unsubscribe, revoke, status, export. No gRPC types and no SQL here.

Every change is one ledger event plus the subject's current state, written in the same transaction. An email
with nothing on record answers exactly like any other unknown address: both consents off, no last action.

The latest statement wins, by when the person made it (an opt-in carries the time of the visitor's answer; an
unsubscribe or revoke is made when it arrives): every statement is appended to the ledger in the order it arrives,
but the current state only changes for a statement at least as new as the one it holds. A later "no" to marketing
turns it off, whichever chat or link it came through, and a delayed older "yes" cannot turn it back on.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from sqlalchemy.engine import Connection

from services.consent import ledger_storage, validation
from services.consent.chain import Entry, Event, Verification
from services.consent.checkpoints import LedgerIntegrity
from services.consent.crypto import SubjectCrypto
from services.consent.ledger_storage import Appender
from services.consent.storage import (
    ConsentRecords,
    ConsentState,
    ConsentTexts,
    PendingErasures,
    aware,
    outage_as_unavailable,
)
from services.consent.writer import LedgerWriter
from services.runtime.clock import utcnow
from services.runtime.db import Database
from services.runtime.errors import NotFoundError, UnavailableError, ValidationError
from services.runtime.request_context import Caller

OPT_IN, UNSUBSCRIBE, REVOKE, ERASURE_COMPLETED = "opt-in", "unsubscribe", "revoke", "erasure-completed"
ONE_CLICK = "one-click"  # the source of an unsubscribe made with the link in a marketing email
ONE_CLICK_PATH = "/api/unsubscribe/one-click"
TEXT_HASH_PREFIX = ledger_storage.TEXT_LABEL_PREFIX  # text_version of an entry referencing a stored wording
MAX_CONSENT_TEXT = 20_000
REFERENCES = ("session_id", "conversation_id", "lead_id")  # kept in references_enc, under the subject's key
_NO_CALLER = Caller()  # a change made without a client behind it: no address, no user agent


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
    consent_text: str
    language: str
    key_id: str


@dataclass(frozen=True)
class Subject:
    subject_id: str
    key: bytes


@dataclass(frozen=True)
class _Details:
    """What an event records besides consent: where an opt-in was given, or why someone withdrew."""

    text_version: str = ""
    source: str = ""
    session_id: str = ""
    conversation_id: str = ""
    lead_id: str = ""
    reason: str = ""
    wording: tuple[str, str, str] | None = None  # (text_hash, language, consent text) to keep with the entry


@dataclass(frozen=True)
class _Request:
    """A change request's common fields, validated: who it is about and who asked."""

    email: str
    subject_hash: str
    request_id: str | None
    client_ip: str
    user_agent: str


def _status_from(email: str, state: ConsentState | None) -> Status:
    """The answer for a current state; None (nothing on record, or erased) answers as for anyone unknown."""
    if state is None:
        return Status(email)
    return Status(
        email, state["processing_consent"], state["marketing_consent"], state["last_action"], state["last_action_at"]
    )


def withdrawal_answer(status: Status) -> Status:
    """The public answer to an unsubscribe: the same for every address (marketing off, when), never whether
    processing consent, and so a record, exists."""
    return Status(status.email, marketing_consent=False, last_action=UNSUBSCRIBE, last_action_at=status.last_action_at)


class ConsentService:
    def __init__(
        self,
        db: Database,
        crypto: SubjectCrypto,
        writer: LedgerWriter,
        on_erasure_requested: Callable[[], None] = lambda: None,
        public_base_url: str = "http://127.0.0.1:8080",
        *,
        integrity: LedgerIntegrity,
    ):
        self.integrity = integrity
        self.texts = ConsentTexts(db)
        self._kept_texts: set[str] = set()  # wordings known to be stored: not written again
        self.public_base_url = public_base_url.rstrip("/")
        self.db = db
        self.crypto = crypto
        self.writer = writer
        self.on_erasure_requested = on_erasure_requested
        self.records = ConsentRecords(db)

    # --- changes -----------------------------------------------------------------------------------------

    def unsubscribe(self, email: str, reason: str = "", request_id: str = "", origin: Caller = _NO_CALLER) -> Status:
        """Marketing off at once (Art. 21); processing consent stays as it was."""
        reason = validation.reason(reason)
        request = self._request(email, request_id, origin)

        def work(_conn: Connection, appender: Appender) -> Status:
            replayed = self._replay(appender, request, UNSUBSCRIBE)
            if replayed is not None:
                return replayed
            subject = self._subject(appender, request.subject_hash)
            current = appender.state(subject.subject_id)
            processing = current is not None and current["processing_consent"]
            return self._record(
                appender, request, subject, UNSUBSCRIBE, processing, False, _Details(reason=reason), utcnow()
            )

        return self._write(work, request)

    def check_unsubscribe_token(self, token: str) -> str:
        """The subject id a one-click token names; ValidationError for a token this service did not sign."""
        subject_id = self.crypto.token_subject(token)
        if subject_id is None:
            raise ValidationError("this unsubscribe link is not valid; use the form at /api/unsubscribe instead")
        return subject_id

    def one_click_unsubscribe(self, token: str, origin: Caller = _NO_CALLER) -> bool:
        """The link in a marketing email (RFC 8058): marketing off for the person the token names, no login.

        A token this service did not sign is refused (ValidationError) and changes nothing. A second POST succeeds
        again. Returns the marketing consent now: False (also for a person since erased, who has nothing on record).
        """
        subject_id = self.check_unsubscribe_token(token)
        with outage_as_unavailable():
            subject_hash = self.records.subject_hash(subject_id)
        if subject_hash is None:
            return False
        request = _Request(
            email="", subject_hash=subject_hash, request_id=None,
            client_ip=validation.client_ip(origin.client_ip), user_agent=validation.user_agent(origin.user_agent),
        )

        def work(_conn: Connection, appender: Appender) -> Status:
            known = appender.subject(subject_hash)
            if known is None or known[0] != subject_id:  # erased meanwhile: nothing on record any more
                return Status("")
            subject = Subject(subject_id, self.crypto.unwrap(subject_id, known[1]))
            current = appender.state(subject_id)
            processing = current is not None and current["processing_consent"]
            details = _Details(source=ONE_CLICK, reason="one-click unsubscribe link")
            return self._record(appender, request, subject, UNSUBSCRIBE, processing, False, details, utcnow())

        return self._write(work, request).marketing_consent

    def revoke(self, email: str, reason: str = "", request_id: str = "", origin: Caller = _NO_CALLER) -> Status:
        """Processing and marketing off, and erasure in the chat service queued in the same transaction."""
        reason = validation.reason(reason)
        request = self._request(email, request_id, origin)

        def work(conn: Connection, appender: Appender) -> Status:
            replayed = self._replay(appender, request, REVOKE)
            if replayed is not None:
                return replayed
            subject = self._subject(appender, request.subject_hash)
            status = self._record(
                appender, request, subject, REVOKE, False, False, _Details(reason=reason), utcnow()
            )
            # One pending erasure per subject, with its own id: chat carries out an erasure id once.
            email_enc = self.crypto.encrypt(subject.key, subject.subject_id, "pending_email", request.email)
            PendingErasures.queue(conn, subject.subject_id, f"erase-{uuid.uuid4().hex}", email_enc, utcnow())
            return status

        status = self._write(work, request)
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
        origin: Caller = _NO_CALLER,
        stated_at: datetime | None = None,
        consent_text: str = "",
        language: str = "",
    ) -> Status:
        """An opt-in collected by the chat service, with the consent text version and where it was given.

        `marketing_consent` is the person's answer as given at `stated_at` (None: now): False is a "no" that turns
        marketing off, unless the state already holds a newer statement. With `consent_text` (the exact wording
        shown, in `language`) the entry references that wording by its SHA-256, and a typed text_version is
        ignored: a label cannot drift from the text."""
        now = utcnow()
        stated = now if stated_at is None else min(aware(stated_at), now)  # a clock ahead cannot outrank later news
        if not processing_consent:
            raise ValidationError("processing_consent must be true: an opt-in without it records nothing")
        wording = _wording(consent_text, language)
        details = _Details(
            text_version=(
                TEXT_HASH_PREFIX + wording[0] if wording is not None
                else validation.identifier("text_version", text_version, validation.MAX_SHORT, required=True)
            ),
            source=validation.identifier("source", source, validation.MAX_SHORT, required=True),
            session_id=validation.identifier("session_id", session_id),
            conversation_id=validation.identifier("conversation_id", conversation_id),
            lead_id=validation.identifier("lead_id", lead_id),
            wording=wording,
        )
        request = self._request(email, request_id, origin)

        def work(conn: Connection, appender: Appender) -> Status:
            replayed = self._replay(appender, request, OPT_IN)
            if replayed is not None:
                return replayed
            subject = self._subject(appender, request.subject_hash)
            if PendingErasures.in_progress(conn, subject.subject_id):
                raise UnavailableError("this person's erasure is in progress; record the consent again shortly")
            if wording is not None and wording[0] not in self._kept_texts:
                ConsentTexts.keep(conn, *wording, utcnow())
            return self._record(appender, request, subject, OPT_IN, True, marketing_consent, details, stated)

        status = self._write(work, request)
        if wording is not None:
            self._kept_texts.add(wording[0])
        return status

    # --- what the changes share --------------------------------------------------------------------------

    def _request(self, email: str, request_id: str, origin: Caller) -> _Request:
        normalised = validation.normalise_email(email)
        return _Request(
            email=normalised,
            subject_hash=self.crypto.subject_hash(normalised),
            request_id=validation.identifier("request_id", request_id) or None,
            client_ip=validation.client_ip(origin.client_ip),
            user_agent=validation.user_agent(origin.user_agent),
        )

    def _write(self, work: Callable[[Connection, Appender], Status], request: _Request) -> Status:
        with outage_as_unavailable():
            return self.writer.run(work, subject_hash=request.subject_hash, request_id=request.request_id)

    def _replay(self, appender: Appender, request: _Request, action: str) -> Status | None:
        """A retried request: answer with the current status and record nothing new."""
        if request.request_id is None:
            return None
        earlier = appender.find_request(request.request_id)
        if earlier is None:
            return None
        earlier_action, earlier_subject = earlier
        known = appender.subject(request.subject_hash)
        subject_id = known[0] if known is not None else None
        if earlier_action != action or subject_id not in (None, earlier_subject):
            raise ValidationError("request_id was already used for a different request")
        return _status_from(request.email, appender.state(subject_id) if subject_id else None)

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

    def _record(
        self,
        appender: Appender,
        request: _Request,
        subject: Subject,
        action: str,
        processing: bool,
        marketing: bool,
        details: _Details,
        stated_at: datetime,
    ) -> Status:
        """Append the event (personal fields encrypted under the subject's key); it becomes the current state unless
        the state holds a statement the person made later (then the answer is that state)."""
        encrypt, key, subject_id = self.crypto.encrypt, subject.key, subject.subject_id
        references = {name: getattr(details, name) for name in REFERENCES if getattr(details, name)}
        entry = appender.append(
            Event(
                action=action,
                subject_id=subject_id,
                processing_consent=processing,
                marketing_consent=marketing,
                text_version=details.text_version,
                source=details.source,
                request_id=request.request_id,
                email_enc=encrypt(key, subject_id, "email", request.email),
                client_ip_enc=encrypt(key, subject_id, "client_ip", request.client_ip),
                user_agent_enc=encrypt(key, subject_id, "user_agent", request.user_agent),
                reason_enc=encrypt(key, subject_id, "reason", details.reason),
                references_enc=encrypt(
                    key, subject_id, "references", json.dumps(references, separators=(",", ":")) if references else ""
                ),
            )
        )
        current = appender.state(subject_id)
        if current is not None and stated_at < current["stated_at"]:
            return _status_from(request.email, current)
        appender.set_state(ConsentState(
            subject_id=subject_id, processing_consent=processing, marketing_consent=marketing, last_action=action,
            last_action_at=entry["recorded_at"], last_seq=entry["seq"], stated_at=stated_at,
        ))
        return Status(request.email, processing, marketing, action, entry["recorded_at"])

    # --- questions ---------------------------------------------------------------------------------------

    def marketing_allowed(self, email: str) -> bool:
        """Asked by the notifier before every attempt of a marketing message."""
        return self.status(email).marketing_consent

    def unsubscribe_link(self, email: str) -> str:
        """The one-click URL for a marketing email to this person; NotFoundError when nothing is on record."""
        email = validation.normalise_email(email)
        with outage_as_unavailable():
            subject_id = self.records.subject_id(self.crypto.subject_hash(email))
        if subject_id is None:
            raise NotFoundError("nothing is on record for this person")
        return f"{self.public_base_url}{ONE_CLICK_PATH}?token={quote(self.crypto.unsubscribe_token(subject_id))}"

    def status(self, email: str) -> Status:
        email = validation.normalise_email(email)
        with outage_as_unavailable():
            return _status_from(email, self.records.state(self.crypto.subject_hash(email)))

    def export(self, email: str) -> tuple[str, list[ExportedEntry]]:
        """Everything recorded about one person, decrypted, in ledger order (Art. 15)."""
        email = validation.normalise_email(email)
        with outage_as_unavailable():
            found = self.records.entries(self.crypto.subject_hash(email))
        if found is None:
            return email, []
        subject_id, wrapped_key, entries = found
        key = self.crypto.unwrap(subject_id, wrapped_key)
        hashes = {e["text_version"].removeprefix(TEXT_HASH_PREFIX) for e in entries
                  if e["text_version"].startswith(TEXT_HASH_PREFIX)}
        with outage_as_unavailable():
            wordings = self.texts.find(hashes) if hashes else {}
        return email, [self._exported(entry, key, wordings) for entry in entries]

    def decrypt_entry(self, row: Entry, key: bytes | None) -> dict[str, str]:
        """The personal fields of one ledger row; raises KeyDestroyed once the subject was erased.

        The session, conversation and lead ids are encrypted in entries since migration 0004; older entries keep
        them in the plain columns (left as they were: the ledger is append-only)."""
        decrypt, subject_id = self.crypto.decrypt, row["subject_id"]
        references: dict[str, str] = json.loads(
            decrypt(key, subject_id, "references", row["references_enc"]) or "{}"
        )
        return {
            "email": decrypt(key, subject_id, "email", row["email_enc"]),
            "client_ip": decrypt(key, subject_id, "client_ip", row["client_ip_enc"]),
            "user_agent": decrypt(key, subject_id, "user_agent", row["user_agent_enc"]),
            "reason": decrypt(key, subject_id, "reason", row["reason_enc"]),
            "session_id": references.get("session_id") or row["session_id"],
            "conversation_id": references.get("conversation_id") or row["conversation_id"],
            "lead_id": references.get("lead_id") or row["lead_id"],
        }

    def _exported(self, row: Entry, key: bytes, wordings: dict[str, tuple[str, str]]) -> ExportedEntry:
        personal = self.decrypt_entry(row, key)
        language, consent_text = wordings.get(row["text_version"].removeprefix(TEXT_HASH_PREFIX), ("", ""))
        return ExportedEntry(
            seq=row["seq"],
            action=row["action"],
            recorded_at=row["recorded_at"],
            text_version=row["text_version"],
            source=row["source"],
            client_ip=personal["client_ip"],
            user_agent=personal["user_agent"],
            reason=personal["reason"],
            session_id=personal["session_id"],
            conversation_id=personal["conversation_id"],
            lead_id=personal["lead_id"],
            request_id=row["request_id"] or "",
            processing_consent=row["processing_consent"],
            marketing_consent=row["marketing_consent"],
            entry_hash=row["entry_hash"],
            prev_hash=row["prev_hash"],
            consent_text=consent_text,
            language=language,
            key_id=row["key_id"],
        )

    def verify(self) -> Verification:
        """The chain against its keys and the newest signed checkpoint, and the current states against the ledger."""
        with outage_as_unavailable():
            return self.integrity.verify()

    def ledger_length(self) -> int:
        return ledger_storage.length(self.db)


def _wording(consent_text: str, language: str) -> tuple[str, str, str] | None:
    """(SHA-256 hex of the exact wording, language, wording), or None when no wording was sent."""
    if not consent_text:
        return None
    if not consent_text.strip() or len(consent_text) > MAX_CONSENT_TEXT:
        raise ValidationError(f"consent_text must be the wording shown, at most {MAX_CONSENT_TEXT} characters")
    language = validation.identifier("language", language, 16, required=True)
    return hashlib.sha256(consent_text.encode()).hexdigest(), language, consent_text
