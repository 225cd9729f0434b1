"""An access request (GDPR Art. 15) and data portability (Art. 20): one JSON document with everything the three
services hold about one person.

The consent service owns the person's identity, so it puts the document together: chat's conversations, messages
and leads found by the email (and by the phones and names captured with it), this service's current state and
decrypted ledger, and the notifier's deliveries made about the person (found by the email, those phones and the
lead, session and conversation ids from chat and from the ledger). Called by the admin route, and by the public
route once the person has proved control of the mailbox. A peer that does not answer makes the whole export fail
with UnavailableError: a partial document is never presented as complete.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.consent import validation
from services.consent.consent import ConsentService
from services.runtime.clock import utcnow

FORMAT = "novahouse.person-export.v1"


@dataclass(frozen=True)
class ChatHoldings:
    """What chat holds about the person (its JSON document) and the identifiers it found them by."""

    document: dict[str, Any]
    lead_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)


class ChatSource(Protocol):
    def __call__(self, email: str) -> ChatHoldings: ...


class DeliverySource(Protocol):
    def __call__(
        self, email: str, phones: list[str], lead_ids: list[str], session_ids: list[str], conversation_ids: list[str]
    ) -> list[dict[str, Any]]: ...


def _json_value(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


class PersonExport:
    def __init__(self, consent: ConsentService, chat: ChatSource, deliveries: DeliverySource):
        self.consent = consent
        self.chat = chat
        self.deliveries = deliveries

    def export(self, email: str) -> dict[str, Any]:
        """The whole document; UnavailableError when chat, the notifier or the database does not answer."""
        email = validation.normalise_email(email)
        status = self.consent.status(email)
        _, entries = self.consent.export(email)
        chat = self.chat(email)
        ledger = [{k: _json_value(v) for k, v in asdict(entry).items()} for entry in entries]
        lead_ids = set(chat.lead_ids) | {e.lead_id for e in entries if e.lead_id}
        session_ids = set(chat.session_ids) | {e.session_id for e in entries if e.session_id}
        conversation_ids = set(chat.conversation_ids) | {e.conversation_id for e in entries if e.conversation_id}
        deliveries = self.deliveries(
            email, sorted(chat.phones), sorted(lead_ids), sorted(session_ids), sorted(conversation_ids)
        )
        return {
            "format": FORMAT,
            "generated_at": utcnow().isoformat(),
            "email": email,
            "identifiers": {
                "phones": sorted(chat.phones),
                "lead_ids": sorted(lead_ids),
                "session_ids": sorted(session_ids),
                "conversation_ids": sorted(conversation_ids),
            },
            "chat": chat.document,
            "consent": {
                "current": {k: _json_value(v) for k, v in asdict(status).items()},
                "ledger": ledger,
            },
            "deliveries": deliveries,
        }
