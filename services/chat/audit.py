"""The agent audit: every action an agent takes is one agent_action row (who, what, when, on which conversation or
lead), written in the transaction of the change itself, so a change is never without its record nor a record
without its change. The detail names what was touched (the corrected fields' names, the new status), never a value
a visitor gave. The rows about a person go with their conversations and leads on erasure and by retention
(storage.delete_conversations) and are listed in their export.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from services.chat import inbox_store
from services.runtime.clock import utcnow

# The inbox's actions; sign-in and sign-out are recorded by staff_auth (staff_store.record_action).
TAKE_OVER, REPLY, HAND_BACK, CORRECT_LEAD, SET_STATUS = "take_over", "reply", "hand_back", "correct_lead", "set_status"


def record(
    s: Session, agent: str, action: str, *, session_id: str | None = None, lead_id: str | None = None,
    detail: str = "",
) -> None:
    inbox_store.add_agent_action(s, agent, action, session_id, lead_id, detail[:200], utcnow())


def field_names(names: Iterable[str]) -> str:
    """A correction's detail: the names of the fields it set, sorted; never their values."""
    return ",".join(sorted(names))
