"""SQL of staff sign-in: signed-out tokens (staff_revoked_token) and the login/logout lines of the agent audit."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from services.chat.storage import AgentAction, StaffRevokedToken
from services.runtime.clock import utcnow
from services.runtime.db import Database


def revoke(db: Database, token_id: str, until: dt.datetime) -> None:
    """Refuse the token until `until`; rows of tokens that have expired since are dropped on the way."""
    with db.session() as session:
        session.execute(delete(StaffRevokedToken).where(StaffRevokedToken.expires_at < utcnow()))
        session.merge(StaffRevokedToken(token_id=token_id, expires_at=until))


def is_revoked(db: Database, token_id: str) -> bool:
    with db.session() as session:
        found = session.execute(
            select(StaffRevokedToken.token_id).where(StaffRevokedToken.token_id == token_id)).first()
        return found is not None


def record_action(db: Database, agent: str, action: str) -> None:
    """An audit line without a conversation or lead (sign-in and sign-out); never an address or a password."""
    with db.session() as session:
        session.add(AgentAction(agent=agent, action=action, at=utcnow()))


def purge(db: Database, audit_before: dt.datetime) -> int:
    """Retention of what belongs to no person: sign-in and sign-out lines older than `audit_before` and revocations
    of tokens that have expired since (they would be refused as expired anyway). Returns the audit lines deleted."""
    with db.session() as session:
        session.execute(delete(StaffRevokedToken).where(StaffRevokedToken.expires_at < utcnow()))
        result = session.execute(delete(AgentAction).where(
            AgentAction.session_id.is_(None), AgentAction.lead_id.is_(None), AgentAction.at < audit_before))
        return int(getattr(result, "rowcount", 0) or 0)
