"""Handing leads over: what the consent service and the notifier must hear about a lead, queued with the change and
sent after it.

Every change to a lead (created, corrected, a request, a returning visitor) queues its messages in the lead outbox
in the same transaction (queue_* below). deliver() then sends a lead's queued messages in order and marks each sent
only after the other service acknowledged it. A visitor's turn does not wait for that: hand_over() gives the lead to
a thread of its own, under the turn's request id, and the reply goes out at once (issue 18); consent orders the
statements by the time each was made, which the outbox keeps, not by when they arrive. A message that fails (a
service down) stays queued, with the ones after it, and is retried by retry_pending() from the periodic job and from
`manage run-followups`. A message's key is also its idempotency key at the other service, which answers a repeated
key with the first result, so a retry is harmless. What a Monday.com item or a Slack alert says is read from the
lead when it is sent: a retried update carries the latest values.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from services.chat import storage
from services.chat.remote import ConsentClient, NotifierClient, PeerUnavailable
from services.chat.sales import Alert, SalesView
from services.chat.storage import Lead, Queued
from services.runtime.clock import utcnow
from services.runtime.db import Database

log = logging.getLogger(__name__)

CONSENT, MONDAY_CREATE, MONDAY_UPDATE = "consent", "monday_create", "monday_update"
SLACK_LEAD, SLACK_REQUEST, SLACK_RETURNING = "slack_lead", "slack_request", "slack_returning"


@dataclass
class RetryResult:
    delivered: int = 0
    pending: int = 0


# --- queueing (inside the caller's transaction) ----------------------------------------------------------------


def queue_new_lead(s: Session, lead: Lead, alert: bool) -> None:
    """The consent statement, then the Monday.com item (found again by the lead id if a create is retried), and
    the Slack alert when one is due."""
    messages: list[tuple[str, str, dict[str, Any]]] = [
        (CONSENT, f"lead:{lead.id}:consent", {}), (MONDAY_CREATE, f"lead:{lead.id}:monday", {})
    ]
    if alert:
        messages.append((SLACK_LEAD, f"lead:{lead.id}:slack", {}))
    storage.add_outbox(s, lead.id, messages)


def queue_item_update(s: Session, lead: Lead) -> None:
    """The lead's Monday.com item takes the lead's current values."""
    storage.add_outbox(s, lead.id, [(MONDAY_UPDATE, f"lead:{lead.id}:monday:{_fresh()}", {})])


def queue_consent(s: Session, lead: Lead, key: str, statement: Mapping[str, Any]) -> None:
    """A later consent statement about the lead's person (a returning visitor's, one under a new email)."""
    storage.add_outbox(s, lead.id, [(CONSENT, f"lead:{lead.id}:consent:{key}", dict(statement))])


def queue_email(s: Session, lead: Lead, stated_at: dt.datetime) -> None:
    """A lead given an email later: its person's consent statement goes to the ledger now, under that email."""
    queue_consent(s, lead, f"email-{_fresh()}", {"stated_at": stated_at.isoformat()})


def queue_request(s: Session, lead: Lead, request: Mapping[str, str]) -> None:
    storage.add_outbox(s, lead.id, [(SLACK_REQUEST, f"lead:{lead.id}:request:{_fresh()}", dict(request))])


def queue_returning(s: Session, lead: Lead, session_id: str, news: Mapping[str, str]) -> None:
    """Sales hears that the lead's person came back (and what they gave that the lead does not hold)."""
    details = {"session_id": session_id, "news": dict(news)}
    storage.add_outbox(s, lead.id, [(SLACK_RETURNING, f"lead:{lead.id}:returning:{_fresh()}", details)])


def _fresh() -> str:
    """A key part no other message about the lead has: two turns of the same person (two tabs, two replicas) may
    queue at once, and a count read by both would give both the same key."""
    return uuid.uuid4().hex[:16]


# --- sending -----------------------------------------------------------------------------------------------------


class LeadDelivery:
    def __init__(
        self,
        db: Database,
        consent: ConsentClient,
        notifier: NotifierClient,
        sales: SalesView,
        alert_score: int,
        consent_wording: Callable[[str], str],
    ):
        """`consent_wording(language)`: the exact consent text a visitor in that language was shown."""
        self.db = db
        self.consent = consent
        self.notifier = notifier
        self.sales = sales
        self.alert_score = alert_score
        self.consent_wording = consent_wording
        self._handovers: queue.SimpleQueue[tuple[str, contextvars.Context] | None] = queue.SimpleQueue()
        self._in_flight = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None

    def alert_due(self, lead: Lead) -> bool:
        """Whether sales is alerted on Slack as well: a high score, or something to look at before calling."""
        return lead.score >= self.alert_score or bool(self.sales.flags(lead))

    def deliver(self, lead_id: str) -> bool:
        """True when everything queued about the lead is handed over; False when something must be retried later."""
        with self.db.session() as s:
            found = storage.lead_for_handover(s, lead_id)
            queued = storage.pending_outbox(s, lead_id)
        if found is None:
            return True
        lead, session_id = found
        sent: list[int] = []
        try:
            for message in queued:
                self._send(message, lead, session_id)
                sent.append(message.id)
        except PeerUnavailable as exc:
            log.warning("lead hand-over postponed",
                        extra={"lead_id": lead_id, "outbox_kind": message.kind, "reason": str(exc)})
        finally:
            if sent:  # one write for them all: a crash before it sends them again, under the same keys
                with self.db.session() as s:
                    storage.mark_outbox_sent(s, sent, utcnow())
        return len(sent) == len(queued)

    def hand_over(self, lead_id: str) -> None:
        """deliver(lead_id) on the hand-over thread, in the order asked, under the caller's request id. What a stop or
        a crash leaves unsent stays in the outbox for retry_pending()."""
        with self._idle:
            self._in_flight += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._hand_over_loop, name="lead-handover", daemon=True)
                self._worker.start()
        self._handovers.put((lead_id, contextvars.copy_context()))

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every lead given to hand_over() has been through deliver() (for tests and a graceful stop)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the hand-overs already asked for (bounded by timeout_s), then end the thread."""
        with self._idle:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._handovers.put(None)
            worker.join(timeout_s)

    def _hand_over_loop(self) -> None:
        while (item := self._handovers.get()) is not None:
            lead_id, context = item
            try:
                context.run(self.deliver, lead_id)
            except Exception:  # the lead stays queued in the outbox, and the periodic retry sends it
                log.exception("lead hand-over failed", extra={"lead_id": lead_id})
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

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

    def _send(self, message: Queued, lead: Lead, session_id: str) -> None:
        details = message.details
        if message.kind == CONSENT:
            if details.get("email") or lead.email:  # the ledger is kept by email: a phone-only lead's waits for one
                self._record_consent(message.key, lead, session_id, details)
        elif message.kind in (MONDAY_CREATE, MONDAY_UPDATE):
            name, columns = self.sales.monday(lead, session_id)
            operation = "create" if message.kind == MONDAY_CREATE else "update"
            self.notifier.monday_item(message.key, name, columns, operation=operation, lookup_key=lead.id)
        elif message.kind == SLACK_LEAD:
            self._alert(message.key, self.sales.lead_alert(lead, session_id))
        elif message.kind == SLACK_REQUEST:
            self._alert(message.key, self.sales.request_alert(lead, session_id, details))
        elif message.kind == SLACK_RETURNING:
            self._alert(message.key, self.sales.returning_alert(lead, details["session_id"], details["news"]))
        else:
            raise ValueError(f"lead outbox kind {message.kind!r} is unknown")

    def _alert(self, key: str, alert: Alert) -> None:
        self.notifier.slack_alert(key, alert.title, alert.text, alert.fields)

    def _record_consent(self, key: str, lead: Lead, session_id: str, statement: Mapping[str, Any]) -> None:
        """The lead's own statement, or a later one (`statement` overrides: email, marketing, stated_at, session)."""
        stated_at = statement.get("stated_at")
        self.consent.record_consent(
            email=statement.get("email") or lead.email or "",
            processing=lead.processing_consent,
            marketing=bool(statement.get("marketing", lead.marketing_consent)),
            text_version=lead.consent_text_version,
            consent_text=self.consent_wording(lead.language),
            language=lead.language,
            session_id=statement.get("session_id", session_id),
            conversation_id=str(statement.get("conversation_id", lead.conversation_id)),
            lead_id=lead.id,
            client_ip=lead.client_ip or "",
            user_agent=lead.user_agent or "",
            request_id=key,
            stated_at=dt.datetime.fromisoformat(stated_at) if stated_at else lead.created_at,
        )
