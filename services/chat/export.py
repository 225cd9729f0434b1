"""What chat holds about one person, for an access request (GDPR Art. 15 and 20), asked by the consent service.

The person is found by their email: conversations that captured it or whose messages contain it, and leads with it.
From those come the phone numbers and full names captured with the email; a conversation whose messages hold one
of those phones (in any format: spaces, dashes and brackets ignored) or names is the person's too, unless it
captured another email (then it is someone else's, who typed the same number or name). This repeats until nothing
new is found. A one-word name is not searched for: too many people share it.

The export carries every conversation with its captured details, messages and follow-ups, and every lead with its
fields, score and hand-over state, each with its id; plus the ids, phones and session ids other services may hold
about this person, so the consent service can ask the notifier for the deliveries made about them.

A person who gave only a phone (an operator's request, after an identity check) is found by it alone: leads with
that phone and conversations whose messages hold it in any format, nothing more (no names, no emails followed).
The emails captured in what was found are listed, so the operator is told rather than the search silently widened.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.privacy import checked_subject, national_digits
from services.chat.slots import slot_text
from services.chat.storage import Conversation, Lead
from services.runtime.db import Database

_NATIONAL_DIGITS = re.compile(r"^\+48(\d{9})$")


@dataclass
class SubjectExport:
    document: dict[str, Any]
    lead_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _identifiers(conversations: list[Conversation], leads: list[Lead]) -> tuple[set[str], set[str]]:
    """The phones and full names (lower-cased) captured in these conversations and leads."""
    phones = {slot_text(c.slots, "phone") for c in conversations} | {lead.phone for lead in leads}
    names = {slot_text(c.slots, "name") for c in conversations} | {lead.name for lead in leads}
    return (
        {p for p in phones if p},
        {n.strip().lower() for n in names if n and len(n.split()) >= 2},
    )


def _someone_else(conversation: Conversation, leads: list[Lead], email: str) -> bool:
    emails = {conversation.contact_email, slot_text(conversation.slots, "email")}
    emails |= {lead.email for lead in leads if lead.conversation_id == conversation.id}
    return any(e and e != email for e in emails)


def _find(s: Session, email: str) -> tuple[list[Conversation], list[Lead], dict[int, set[str]], set[str]]:
    """The person's conversations and leads, why each conversation was taken, and the phones captured."""
    leads = storage.leads_by_email(s, email)
    found_by: dict[int, set[str]] = {}
    for cid in storage.conversation_ids_with_email(s, email) | {lead.conversation_id for lead in leads}:
        found_by.setdefault(cid, set()).add("email")
    searched_phones: set[str] = set()
    searched_names: set[str] = set()
    while True:
        conversations = storage.conversations_by_ids(s, found_by)
        leads = list({lead.id: lead for lead in leads + storage.leads_of_conversations(s, found_by)}.values())
        phones, names = _identifiers(conversations, leads)
        candidates: dict[int, set[str]] = {}
        for phone in phones - searched_phones:
            digits = _NATIONAL_DIGITS.match(phone)
            for cid in storage.conversation_ids_mentioning_digits(s, digits.group(1) if digits else phone):
                candidates.setdefault(cid, set()).add("phone")
        for name in names - searched_names:
            for cid in storage.conversation_ids_mentioning(s, name):
                candidates.setdefault(cid, set()).add("name")
        searched_phones |= phones
        searched_names |= names
        new = {cid: why for cid, why in candidates.items() if cid not in found_by}
        for cid, why in candidates.items():
            if cid in found_by:
                found_by[cid] |= why
        added = False
        if new:
            their_leads = storage.leads_of_conversations(s, new)
            for conversation in storage.conversations_by_ids(s, new):
                if not _someone_else(conversation, their_leads, email):
                    found_by[conversation.id] = new[conversation.id]
                    added = True
        if not added:
            return sorted(conversations, key=lambda c: c.id), sorted(leads, key=lambda x: x.id), found_by, phones


def _find_by_phone(
    s: Session, phone: str
) -> tuple[list[Conversation], list[Lead], dict[int, set[str]], set[str]]:
    leads = storage.leads_by_phone(s, phone)
    found_by: dict[int, set[str]] = {}
    for cid in storage.conversation_ids_mentioning_digits(s, national_digits(phone)) | {
        lead.conversation_id for lead in leads
    }:
        found_by.setdefault(cid, set()).add("phone")
    conversations = storage.conversations_by_ids(s, found_by)
    leads = list({lead.id: lead for lead in leads + storage.leads_of_conversations(s, found_by)}.values())
    phones, _ = _identifiers(conversations, leads)
    return sorted(conversations, key=lambda c: c.id), sorted(leads, key=lambda x: x.id), found_by, phones | {phone}


def _conversation(s: Session, conversation: Conversation, found_by: set[str]) -> dict[str, Any]:
    return {
        "conversation_id": conversation.id,
        "session_id": conversation.session_id,
        "found_by": sorted(found_by),
        "created_at": _time(conversation.created_at),
        "last_activity_at": _time(conversation.last_activity_at),
        "language": conversation.language,
        "stage": conversation.stage,
        "captured": dict(conversation.slots),
        "contact_email": conversation.contact_email,
        "lead_id": conversation.lead_id,
        "marketing_consent": conversation.marketing_consent,
        "converted": conversation.converted,
        "followups_sent": conversation.followups_sent,
        "followups_stopped": conversation.followups_stopped,
        "last_followup_at": _time(conversation.last_followup_at),
        "messages": [
            {"message_id": m.id, "role": m.role, "text": m.text, "created_at": _time(m.created_at)}
            for m in storage.messages_of(s, conversation.id)
        ],
        "followups": [
            {"followup_id": f.id, "number": f.followup_number, "sent_at": _time(f.sent_at)}
            for f in storage.followups_of(s, conversation.id)
        ],
    }


def _lead(lead: Lead) -> dict[str, Any]:
    return {
        "lead_id": lead.id,
        "conversation_id": lead.conversation_id,
        "created_at": _time(lead.created_at),
        "language": lead.language,
        "name": lead.name,
        "email": lead.email,
        "phone": lead.phone,
        "city": lead.city,
        "area_m2": lead.area_m2,
        "budget_pln": lead.budget_pln,
        "start": lead.start,
        "start_months": lead.start_months,
        "score": lead.score,
        "status": _lead_status(lead),
        "processing_consent": lead.processing_consent,
        "marketing_consent": lead.marketing_consent,
        "consent_text_version": lead.consent_text_version,
        "client_ip": lead.client_ip,
        "user_agent": lead.user_agent,
        "consent_recorded_at": _time(lead.consent_recorded_at),
        "notified_at": _time(lead.notified_at),
        "anonymised_at": _time(lead.anonymised_at),
    }


def _lead_status(lead: Lead) -> str:
    if lead.anonymised_at is not None:
        return "anonymised"
    if lead.notified_at is not None and lead.consent_recorded_at is not None:
        return "handed-over"
    return "pending-hand-over"


def export_subject(db: Database, email: str, phone: str = "") -> SubjectExport:
    email, phone = checked_subject(email, phone)
    with db.session() as s:
        conversations, leads, found_by, phones = _find(s, email) if email else _find_by_phone(s, phone)
        document = {
            "conversations": [_conversation(s, c, found_by[c.id]) for c in conversations],
            "leads": [_lead(lead) for lead in leads],
        }
    return SubjectExport(
        document=document,
        lead_ids=sorted({lead.id for lead in leads} | {c.lead_id for c in conversations if c.lead_id}),
        session_ids=sorted(c.session_id for c in conversations),
        conversation_ids=sorted(str(c.id) for c in conversations),
        phones=sorted(phones),
        emails=[] if email else sorted(_emails(conversations, leads)),
    )


def _emails(conversations: list[Conversation], leads: list[Lead]) -> set[str]:
    found = {c.contact_email for c in conversations} | {slot_text(c.slots, "email") for c in conversations}
    return {e for e in found | {lead.email for lead in leads} if e}
