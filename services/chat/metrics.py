"""The conversation funnel as Prometheus counters: conversations started, leads handed over (new or returning,
complete or partial). Labels are fixed words, never a visitor's data; every series exists from the start at 0."""
from __future__ import annotations

from prometheus_client import Counter

from services.chat.storage import Lead

CONVERSATIONS_STARTED = Counter("chat_conversations_started_total", "Conversations started by a first message")
LEADS = Counter(
    "chat_leads_total",
    "Leads handed over to sales: `visitor` new or returning (the same email or phone), `completeness` partial when "
    "the city, area, budget or start is missing",
    ["visitor", "completeness"],
)
for _visitor in ("new", "returning"):
    for _completeness in ("complete", "partial"):
        LEADS.labels(_visitor, _completeness)


def record_lead(lead: Lead, returning: bool) -> None:
    partial = any(value is None for value in (lead.city, lead.area_m2, lead.budget_amount, lead.start))
    LEADS.labels("returning" if returning else "new", "partial" if partial else "complete").inc()
