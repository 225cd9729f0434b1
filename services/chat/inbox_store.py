"""The sales inbox's SQL (inbox.py): the conversations waiting for a person or with one, agents' messages, the agent
audit, a day's leads and the inbox's numbers. Each a named function taking the session of the caller's transaction,
in the style of storage.py, whose models these are.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.orm import Session

from services.chat.slots import SLOTS, SlotValue
from services.chat.storage import AgentAction, Conversation, Lead, Message, metadata

# A lead is complete when it holds every one of these: slots.SLOTS, in their order (as LeadProgress counts them).
_DETAILS = (Lead.name, Lead.email, Lead.phone, Lead.city, Lead.area_m2, Lead.budget_amount, Lead.start)


def conversations_in(session: Session, state: str) -> list[Conversation]:
    """Conversations whose handoff is `state`, the longest waiting first (by when they asked, then by id)."""
    query = (
        select(Conversation)
        .where(Conversation.handoff == state)
        .order_by(Conversation.handoff_at.is_(None), Conversation.handoff_at, Conversation.taken_at, Conversation.id)
    )
    return list(session.scalars(query))


def last_visitor_messages(session: Session, conversation_ids: Sequence[int]) -> dict[int, str]:
    """The latest visitor ('user') message of each conversation, by conversation id; one query for them all."""
    if not conversation_ids:
        return {}
    latest = (
        select(func.max(Message.id))
        .where(Message.conversation_id.in_(conversation_ids), Message.role == "user")
        .group_by(Message.conversation_id)
    )
    rows = session.execute(select(Message.conversation_id, Message.text).where(Message.id.in_(latest)))
    return dict(rows.tuples().all())


def carry_corrections(session: Session, lead_id: str, corrections: dict[str, SlotValue]) -> None:
    """An agent's corrections written into the slots of every conversation of the lead, so the visitor's next
    message, from which the bot derives the lead again, does not bring the old values back."""
    for conv in session.scalars(select(Conversation).where(Conversation.lead_id == lead_id).with_for_update()):
        slots = {**conv.slots, **corrections}
        conv.slots = {key: value for key, value in slots.items() if value is not None}


def leads_by_ids(session: Session, lead_ids: Iterable[str]) -> dict[str, Lead]:
    wanted = [lead_id for lead_id in lead_ids if lead_id]
    if not wanted:
        return {}
    return {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(wanted)))}


def add_agent_message(session: Session, conversation_id: int, text: str, author: str, at: dt.datetime) -> int:
    """An agent's message; returns its id, which is its seq in the conversation."""
    result = session.execute(
        insert(metadata.tables["message"]).returning(metadata.tables["message"].c.id),
        {"conversation_id": conversation_id, "role": "agent", "text": text, "author": author, "created_at": at},
    )
    return int(result.scalar_one())


def add_agent_action(
    session: Session, agent: str, action: str, session_id: str | None, lead_id: str | None, detail: str,
    at: dt.datetime,
) -> None:
    session.add(AgentAction(at=at, agent=agent, action=action, session_id=session_id, lead_id=lead_id, detail=detail))


def agent_actions_of(session: Session, session_ids: Iterable[str], lead_ids: Iterable[str]) -> list[AgentAction]:
    """Every audit row about these conversations (by session id) or leads, oldest first."""
    sessions, leads = list(session_ids), list(lead_ids)
    if not sessions and not leads:
        return []
    query = select(AgentAction).where(or_(AgentAction.session_id.in_(sessions), AgentAction.lead_id.in_(leads)))
    return list(session.scalars(query.order_by(AgentAction.id)))


def session_ids_of(session: Session, conversation_ids: Iterable[int]) -> dict[int, str]:
    ids = list(conversation_ids)
    if not ids:
        return {}
    return dict(session.execute(select(Conversation.id, Conversation.session_id).where(Conversation.id.in_(ids))).all())


def leads_created_between(session: Session, start: dt.datetime, end: dt.datetime) -> list[tuple[Lead, str]]:
    """Leads created in [start, end), newest first, each with its conversation's session id."""
    query = (
        select(Lead, Conversation.session_id)
        .join(Conversation, Conversation.id == Lead.conversation_id)
        .where(Lead.created_at >= start, Lead.created_at < end)
        .order_by(Lead.created_at.desc(), Lead.id)
    )
    return [(lead, session_id) for lead, session_id in session.execute(query)]


@dataclass
class Counts:
    """One period's figures (stats), before the median, which is computed from handoff_rows."""

    conversations: int = 0
    engaged: int = 0  # conversations with at least one visitor message
    converted: int = 0  # of those, the ones that reached a lead
    leads_complete: int = 0
    leads_partial: int = 0
    handoffs: int = 0


def period_counts(session: Session, since: dt.datetime, today: dt.datetime) -> tuple[Counts, Counts]:
    """(today's, the period's) figures for [since, now), today's being those from `today` on: one aggregate query per
    table over the period, the two periods told apart inside it."""
    is_today = Conversation.created_at >= today
    visitor_wrote = select(Message.id).where(Message.conversation_id == Conversation.id, Message.role == "user")
    engaged = visitor_wrote.exists()
    converted = and_(engaged, Conversation.lead_id.is_not(None))
    conversations = session.execute(
        select(
            func.count(),
            func.count().filter(is_today),
            func.count().filter(engaged),
            func.count().filter(and_(engaged, is_today)),
            func.count().filter(converted),
            func.count().filter(and_(converted, is_today)),
        ).where(Conversation.created_at >= since)
    ).one()
    complete = and_(*(column.is_not(None) for column in _DETAILS))
    lead_today = Lead.created_at >= today
    leads = session.execute(
        select(
            func.count().filter(complete),
            func.count().filter(and_(complete, lead_today)),
            func.count().filter(~complete),
            func.count().filter(and_(~complete, lead_today)),
        ).where(Lead.created_at >= since)
    ).one()
    handoffs = session.execute(
        select(func.count(), func.count().filter(Conversation.handoff_at >= today)).where(
            Conversation.handoff_at >= since
        )
    ).one()
    week = Counts(conversations[0], conversations[2], conversations[4], leads[0], leads[2], handoffs[0])
    day = Counts(conversations[1], conversations[3], conversations[5], leads[1], leads[3], handoffs[1])
    return day, week


def answered_handoffs(session: Session, since: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """(handoff_at, first_agent_reply_at) of the handoffs since `since` an agent answered."""
    query = select(Conversation.handoff_at, Conversation.first_agent_reply_at).where(
        Conversation.handoff_at >= since, Conversation.first_agent_reply_at.is_not(None)
    )
    return [(asked, answered) for asked, answered in session.execute(query) if asked and answered]


def missing_details(lead: Lead) -> list[str]:
    """The details the lead does not hold, by their slot names; none missing is what period_counts' SQL counts as
    complete."""
    return [name for name, column in zip(SLOTS, _DETAILS, strict=True) if getattr(lead, column.key) is None]
