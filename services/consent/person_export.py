"""An access request (GDPR Art. 15) and data portability (Art. 20): one JSON document with everything the three
services hold about one person.

The consent service owns the person's identity, so it puts the document together: chat's conversations, messages
and leads found by the email (and by the phones and names captured with it), this service's current state and
decrypted ledger, and the notifier's deliveries made about the person (found by the email, those phones and the
lead, session and conversation ids from chat and from the ledger). Called by the admin route, and by the public
route once the person has proved control of the mailbox.

An operator may start from a phone instead, for a person who gave only a phone (after the identity check of
docs/privacy/verified-requests.md): the document then has chat's conversations found by that phone and the
notifier's deliveries naming it, and no consent part, since the ledger is keyed by email. When what chat found
captured an email, the document says so (`emails_found_in_chat`) and does not widen the search: the operator
decides whether the same person is asking. A peer that does not answer makes the whole export fail
with UnavailableError: a partial document is never presented as complete.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.consent import validation
from services.consent.consent import ConsentService
from services.runtime.clock import utcnow
from services.runtime.errors import ValidationError

FORMAT = "novahouse.person-export.v1"


@dataclass(frozen=True)
class ChatHoldings:
    """What chat holds about the person (its JSON document) and the identifiers it found them by."""

    document: dict[str, Any]
    lead_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)  # found by phone: the emails those conversations captured


class ChatSource(Protocol):
    def __call__(self, email: str, phone: str = "") -> ChatHoldings: ...


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

    def export_by_phone(self, phone: str) -> dict[str, Any]:
        """The document for a person who gave only a phone; chat validates and normalises the phone."""
        if not (phone or "").strip():
            raise ValidationError("give exactly one of email or phone")
        chat = self.chat("", phone)
        deliveries = self.deliveries(
            "", sorted(chat.phones), sorted(chat.lead_ids), sorted(chat.session_ids), sorted(chat.conversation_ids)
        )
        note = (
            "The consent ledger is keyed by email and was not searched. The conversations found by this phone "
            "captured the email(s) in emails_found_in_chat: if the identity check shows they are the same person's, "
            "export by that email for the ledger."
            if chat.emails else "The consent ledger is keyed by email and was not searched; no email was found."
        )
        return {
            "format": FORMAT,
            "generated_at": utcnow().isoformat(),
            "found_by": "phone",
            "identifiers": {
                "phones": sorted(chat.phones),
                "lead_ids": sorted(chat.lead_ids),
                "session_ids": sorted(chat.session_ids),
                "conversation_ids": sorted(chat.conversation_ids),
            },
            "emails_found_in_chat": sorted(chat.emails),
            "chat": chat.document,
            "consent": {"searched": False, "note": note},
            "deliveries": deliveries,
        }
