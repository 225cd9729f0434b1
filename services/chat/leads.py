"""Handing a stored lead over: its consents to the consent service, then its Monday.com item (and, for a high
score, a Slack alert) to the notifier.

Each step is marked done in the lead row only after the other service acknowledged it, so a lead whose hand-over
failed (a service down) stays pending and is retried by retry_pending() from the periodic job and from
`manage run-followups`. Idempotency keys derived from the lead (lead:<id>:consent, lead:<id>:monday,
lead:<id>:slack) make every retry harmless: the other service answers a repeated key with the first result.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.chat import storage
from services.chat.remote import ConsentClient, NotifierClient, PeerUnavailable
from services.chat.storage import Lead
from services.runtime.clock import utcnow
from services.runtime.db import Database

log = logging.getLogger(__name__)


@dataclass
class RetryResult:
    delivered: int = 0
    pending: int = 0


class LeadDelivery:
    def __init__(
        self,
        db: Database,
        consent: ConsentClient,
        notifier: NotifierClient,
        alert_score: int,
        consent_wording: Callable[[str], str],
    ):
        """`consent_wording(language)`: the exact consent text a visitor in that language was shown."""
        self.db = db
        self.consent = consent
        self.consent_wording = consent_wording
        self.notifier = notifier
        self.alert_score = alert_score

    def deliver(self, lead_id: str) -> bool:
        """True when the lead is fully handed over; False when something must be retried later."""
        with self.db.session() as s:
            found = storage.lead_for_handover(s, lead_id)
        if found is None:
            return True
        lead, session_id = found
        try:
            if lead.consent_recorded_at is None:
                self._record_consent(lead, session_id)
                with self.db.session() as s:
                    storage.mark_consent_recorded(s, lead_id, utcnow())
            if lead.notified_at is None:
                self._notify(lead, session_id)
                with self.db.session() as s:
                    storage.mark_notified(s, lead_id, utcnow())
        except PeerUnavailable as exc:
            log.warning("lead hand-over postponed", extra={"lead_id": lead_id, "reason": str(exc)})
            return False
        return True

    def retry_pending(self, limit: int = 200) -> RetryResult:
        with self.db.session() as s:
            pending = storage.pending_lead_ids(s, limit)
        result = RetryResult()
        for lead_id in pending:
            if self.deliver(lead_id):
                result.delivered += 1
            else:
                result.pending += 1
        return result

    def pending_count(self) -> int:
        with self.db.session() as s:
            return storage.count_pending_leads(s)

    def _record_consent(self, lead: Lead, session_id: str) -> None:
        self.consent.record_consent(
            email=lead.email or "",
            processing=lead.processing_consent,
            marketing=lead.marketing_consent,
            text_version=lead.consent_text_version,
            consent_text=self.consent_wording(lead.language),
            language=lead.language,
            session_id=session_id,
            conversation_id=str(lead.conversation_id),
            lead_id=lead.id,
            client_ip=lead.client_ip or "",
            user_agent=lead.user_agent or "",
            request_id=f"lead:{lead.id}:consent",
            stated_at=lead.created_at,  # stored in the turn that took the visitor's last consent answer
        )

    def _notify(self, lead: Lead, session_id: str) -> None:
        columns = {
            "email": lead.email or "",
            "phone": lead.phone or "",
            "city": lead.city or "",
            "area_m2": str(lead.area_m2 or ""),
            "budget_pln": str(lead.budget_pln or ""),
            "start": lead.start or "",
            "score": str(lead.score),
            "language": lead.language,
            "marketing_consent": "yes" if lead.marketing_consent else "no",
            "lead_id": lead.id,
            "session_id": session_id,
        }
        item_name = f"{lead.name or 'Lead'} – {lead.city or '?'}, {lead.area_m2 or '?'} m²"
        self.notifier.monday_item(f"lead:{lead.id}:monday", item_name, columns)
        if lead.score >= self.alert_score:
            fields = {k: columns[k] for k in ("city", "area_m2", "budget_pln", "start", "score", "lead_id")}
            self.notifier.slack_alert(
                f"lead:{lead.id}:slack",
                f"High-score lead: {lead.score}/100",
                f"{lead.name or 'A visitor'} from {lead.city or '?'} wants a {lead.area_m2 or '?'} m² renovation.",
                fields,
            )
