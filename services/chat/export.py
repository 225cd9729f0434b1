"""What chat holds about one person, for an access request (GDPR Art. 15 and 20), asked by the consent service.

The person is found by subject.find_subject, exactly as an erasure finds them (by email or phone in any format, by
the phones and full names captured with them, and by linkage between conversations and leads), so the ids listed
here are everything an erasure that follows will remove.

The export carries every conversation with its captured details, messages and follow-ups, and every lead with its
fields, score and hand-over state, each with its id; plus the ids, phones, emails and names other services may hold
about this person, so the consent service can ask the notifier for the deliveries made about them. The names are
in the document only (`names`: the names as captured, in conversations and leads): the message has no field for
them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.chat import inbox_store, storage
from services.chat.storage import Conversation, Lead
from services.chat.subject import checked_subject, find_subject
from services.runtime.db import Database


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
            {"message_id": m.id, "role": m.role, "author": m.author, "text": m.text, "created_at": _time(m.created_at)}
            for m in storage.messages_of(s, conversation.id)
        ],
        "followups": [
            {"followup_id": f.id, "number": f.followup_number, "sent_at": _time(f.sent_at)}
            for f in storage.followups_of(s, conversation.id)
        ],
    }


def _lead(s: Session, lead: Lead) -> dict[str, Any]:
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
        "status": "handed-over" if storage.lead_handed_over(s, lead.id) else "pending-hand-over",
        "sales_status": lead.status,  # what sales made of it in the inbox: new, contacted, won, lost
        "processing_consent": lead.processing_consent,
        "marketing_consent": lead.marketing_consent,
        "consent_text_version": lead.consent_text_version,
        "client_ip": lead.client_ip,
        "user_agent": lead.user_agent,
        "budget_amount": lead.budget_amount,
        "budget_currency": lead.budget_currency,
        "request": {"kind": lead.request_kind, "day": lead.request_day, "time": lead.request_time,
                    "channel": lead.request_channel, "requested_at": _time(lead.requested_at)},
        "updated_at": _time(lead.updated_at),
        # What was passed on about the lead, and when (its Monday.com item, Slack alerts, consent statements).
        "handover": [
            {"handover_id": m.id, "kind": m.kind, "details": m.details, "queued_at": _time(m.created_at),
             "sent_at": _time(m.sent_at)}
            for m in storage.outbox_of(s, lead.id)
        ],
        "customer_at": _time(lead.customer_at),
    }


def export_subject(db: Database, email: str, phone: str = "") -> SubjectExport:
    email, phone = checked_subject(email, phone)
    with db.session() as s:
        found = find_subject(s, email, phone)
        document = {
            "conversations": [_conversation(s, c, found.found_by[c.id]) for c in found.conversations],
            "leads": [_lead(s, lead) for lead in found.leads],
            "names": sorted(found.names),
            # What agents did in these conversations and to these leads (the audit: who, what, when).
            "agent_actions": [
                {"at": _time(a.at), "agent": a.agent, "action": a.action, "session_id": a.session_id,
                 "lead_id": a.lead_id, "detail": a.detail}
                for a in inbox_store.agent_actions_of(
                    s, [c.session_id for c in found.conversations], [lead.id for lead in found.leads])
            ],
        }
        conversations, leads = found.conversations, found.leads
    return SubjectExport(
        document=document,
        lead_ids=sorted({lead.id for lead in leads} | {c.lead_id for c in conversations if c.lead_id}),
        session_ids=sorted(c.session_id for c in conversations),
        conversation_ids=sorted(str(c.id) for c in conversations),
        phones=sorted(found.phones),
        emails=sorted(found.emails - {email}),
    )
