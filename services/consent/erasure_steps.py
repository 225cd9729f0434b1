"""The steps of one complete erasure, shared by the erasure after a revoke and the erasure by phone:

1. chat: find every record linked to the person (ExportSubject by email or phone: conversations, leads, sessions,
   the phones and names captured with them), while they still exist;
2. notifier: ErasePerson with all of those, under the erasure's request id: it redacts the deliveries about the
   person and asks Monday.com and Slack to delete what was sent there, or reports what cannot be deleted;
3. chat: EraseSubject under the same request id.

Every call is idempotent by the request id, so a failed step is simply tried again later: steps 1 and 2 are skipped
once step 2 is recorded done (after chat's erasure there would be nothing left to find). Each step's outcome is
stored (counts and references, never personal data) for the erasure report.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from services.consent.person_export import ChatHoldings
from services.consent.storage import ErasureRecords, StoredStep
from services.runtime.clock import utcnow
from services.runtime.errors import ValidationError

log = logging.getLogger(__name__)

CHAT, NOTIFIER, LEDGER = "chat", "notifier", "ledger"
FOUND = "linked records found"
REDACTED = "deliveries redacted"
ERASED = "conversations and leads deleted"
COMPLETED = "erasure-completed, subject key destroyed"
DONE, FAILED = "done", "failed"

T = TypeVar("T")


class ErasureFailed(RuntimeError):
    """A peer did not carry out a step; the message names the call and its status code, never personal data."""


@dataclass(frozen=True)
class ChatCounts:
    conversations: int
    messages_erased: int
    leads_deleted: int


@dataclass(frozen=True)
class PersonToErase:
    """Everything the notifier needs to find the deliveries about the person (its erasure id included)."""

    erasure_id: str
    email: str
    phones: list[str] = field(default_factory=list)
    lead_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProcessorAction:
    """One thing done, or still to do, about a delivery that carried the person's data out (see ErasureAction)."""

    system: str  # "monday", "slack", "email"
    action: str  # "delete-item", "delete-message", "remove-manually", "already-sent", "nothing-sent"
    status: str  # "pending", "done", "failed", "manual"
    delivery_id: str
    external_id: str
    follow_up_delivery_id: str
    updated_at: datetime | None


@dataclass(frozen=True)
class NotifierErasure:
    deliveries_redacted: int
    actions: list[ProcessorAction]


@dataclass(frozen=True)
class Erasure:
    """Who is erased (by email or by phone) under which request, and how the report finds it again."""

    request_id: str
    kind: str                 # "email" (after a revoke) or "phone"
    lookup_hash: str | None   # the report's keyed hash of the email; None for an erasure by phone
    requested_at: datetime
    email: str = ""
    phone: str = ""


class ChatLookup(Protocol):
    def __call__(self, email: str, phone: str = "") -> ChatHoldings: ...


class ChatErase(Protocol):
    def __call__(self, email: str, phone: str, request_id: str) -> ChatCounts: ...


class NotifierErase(Protocol):
    def erase(self, person: PersonToErase) -> NotifierErasure: ...

    def actions(self, erasure_id: str) -> NotifierErasure: ...


def names_in(document: dict[str, Any]) -> list[str]:
    """The names captured in chat's export document: each conversation's captured name and each lead's."""
    found = {c.get("captured", {}).get("name") for c in document.get("conversations", [])}
    found |= {lead.get("name") for lead in document.get("leads", [])}
    return sorted(name.strip() for name in found if isinstance(name, str) and name.strip())


def failure_text(exc: Exception) -> str:
    """What may be stored and logged about a failure: the call and status code, or the exception's type."""
    return str(exc) if isinstance(exc, ErasureFailed) else type(exc).__name__


class ErasureSteps:
    def __init__(self, records: ErasureRecords, chat_lookup: ChatLookup, chat_erase: ChatErase,
                 notifier: NotifierErase):
        self.records = records
        self.chat_lookup = chat_lookup
        self.chat_erase = chat_erase
        self.notifier = notifier

    def run(self, erasure: Erasure) -> ChatCounts:
        """Carry out the steps not yet done; raise on the first that fails. The erasure is recorded with its first
        step's outcome, so a malformed email or phone (refused by chat before anything is done) leaves no trace."""
        request_id, email, phone = erasure.request_id, erasure.email, erasure.phone
        done = {(s.system, s.action) for s in self.records.steps(request_id) if s.outcome == DONE}
        if (NOTIFIER, REDACTED) not in done:
            found = self._attempt(erasure, CHAT, FOUND, lambda: self.chat_lookup(email, phone))
            self._record(erasure, CHAT, FOUND, DONE, (
                f"{len(found.conversation_ids)} conversations, {len(found.lead_ids)} leads, "
                f"{len(found.session_ids)} sessions, {len(found.phones)} phone numbers"
            ))
            person = PersonToErase(
                erasure_id=request_id, email=email,
                phones=sorted(set(found.phones) | ({phone} if phone else set())),
                lead_ids=found.lead_ids, session_ids=found.session_ids, conversation_ids=found.conversation_ids,
                names=names_in(found.document),
            )
            erased = self._attempt(erasure, NOTIFIER, REDACTED, lambda: self.notifier.erase(person))
            self._record(erasure, NOTIFIER, REDACTED, DONE, (
                f"{erased.deliveries_redacted} deliveries redacted, {len(erased.actions)} actions at processors"
            ), reference=request_id)
        counts = self._attempt(erasure, CHAT, ERASED, lambda: self.chat_erase(email, phone, request_id))
        if (CHAT, ERASED) not in done:  # a repeated erasure answers its first counts or none: keep the first
            self._record(erasure, CHAT, ERASED, DONE, (
                f"{counts.conversations} conversations, {counts.messages_erased} messages, "
                f"{counts.leads_deleted} leads deleted"
            ))
        return counts

    def _attempt(self, erasure: Erasure, system: str, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except ValidationError:
            raise  # the caller's input: nothing was attempted
        except Exception as exc:
            self._record(erasure, system, action, FAILED, f"{failure_text(exc)}; to be retried")
            raise

    def _record(self, erasure: Erasure, system: str, action: str, outcome: str, detail: str,
                reference: str = "") -> None:
        self.records.open(erasure.request_id, erasure.kind, erasure.lookup_hash, erasure.requested_at)
        step = StoredStep(system, action, outcome, detail, reference, utcnow())
        self.records.record_step(erasure.request_id, step)
