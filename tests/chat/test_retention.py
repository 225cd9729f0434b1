"""Retention that ends: a lead past LEAD_RETENTION_DAYS goes with its transcript, a fresh one and a customer stay,
conversations without a lead keep RETENTION_DAYS; several purges at once (CronJob, replicas) share the work and each
prints what it did. MarkCustomer refuses what it cannot mark."""
from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from services.chat import privacy
from services.chat.storage import AgentAction, Conversation, Lead, Message, StaffRevokedToken
from services.runtime.clock import utcnow
from services.runtime.errors import NotFoundError, ValidationError
from tests.chat.conftest import build_world
from tests.chat.scripts import POLISH_HIGH_SCORE, as_person
from tests.chat.test_conversation import talk
from testsupport.peers import PeerServer
from testsupport.waiting import wait_for


def new_lead(chat) -> str:
    """A lead of a new person (each its own email and phone)."""
    n = next(_people)
    replies = talk(chat, as_person(POLISH_HIGH_SCORE, f"person{n}@example.com", f"600 700 {n:03d}"))
    return chat.send_message(replies[-1].session_id, "", True, True).lead.lead_id


_people = itertools.count(100)


def age(db, days: int, lead_id: str | None = None, session_id: str | None = None) -> None:
    """Make a lead's conversation (or a conversation) `days` old: its last message and its lead's capture."""
    with db.session() as s:
        if lead_id is not None:
            lead = s.get(Lead, lead_id)
            lead.created_at = utcnow() - dt.timedelta(days=days)
            conversation = s.get(Conversation, lead.conversation_id)
        else:
            conversation = s.scalars(select(Conversation).where(Conversation.session_id == session_id)).one()
        conversation.last_activity_at = utcnow() - dt.timedelta(days=days)


def test_mark_customer_sets_keeps_and_clears_the_mark_and_refuses_what_it_cannot_mark(world):
    lead_id = new_lead(world.chat)
    assert privacy.mark_customer(world.db, lead_id, True) is True
    with world.db.session() as s:
        first = s.get(Lead, lead_id).customer_at
    assert privacy.mark_customer(world.db, f" {lead_id} ", True) is True
    with world.db.session() as s:
        assert s.get(Lead, lead_id).customer_at == first  # marking again keeps when it became a customer
    assert privacy.mark_customer(world.db, lead_id, False) is False
    with pytest.raises(NotFoundError):
        privacy.mark_customer(world.db, "0" * 32, True)
    for malformed in ("", "lead-1", lead_id.upper(), lead_id + "0", "'; DROP TABLE lead; --"):
        with pytest.raises(ValidationError):
            privacy.mark_customer(world.db, malformed, True)


def test_the_purge_deletes_an_old_lead_with_its_transcript_and_keeps_a_fresh_one_and_a_customer(world):
    old, fresh, customer, former_customer = (new_lead(world.chat) for _ in range(4))
    for lead_id in (old, customer, former_customer):
        age(world.db, 400, lead_id)
    privacy.mark_customer(world.db, customer, True)
    privacy.mark_customer(world.db, former_customer, True)
    privacy.mark_customer(world.db, former_customer, False)

    done = privacy.purge_retention(world.db, days=90, lead_days=365, batch_size=1)

    assert (done.leads_deleted, done.conversations_deleted) == (2, 0)
    with world.db.session() as s:
        assert set(s.scalars(select(Lead.id))) == {fresh, customer}
        assert s.scalar(select(func.count()).select_from(Conversation)) == 2
        assert s.scalar(select(func.count()).select_from(Message)) == 2 * 10



def test_the_purge_drops_staff_sign_in_lines_past_lead_retention_and_revocations_of_expired_tokens(world):
    now = utcnow()
    with world.db.session() as s:
        s.add_all([AgentAction(agent="anna", action="login", at=now - dt.timedelta(days=400)),
                   AgentAction(agent="anna", action="logout", at=now - dt.timedelta(days=2)),
                   StaffRevokedToken(token_id="expired", expires_at=now - dt.timedelta(minutes=1)),
                   StaffRevokedToken(token_id="live", expires_at=now + dt.timedelta(hours=1))])

    privacy.purge_retention(world.db, days=90, lead_days=365, batch_size=10)

    with world.db.session() as s:
        assert [(a.action, a.agent) for a in s.scalars(select(AgentAction))] == [("logout", "anna")]
        assert list(s.scalars(select(StaffRevokedToken.token_id))) == ["live"]


@pytest.mark.postgres
def test_purges_running_at_once_share_the_work_and_print_what_they_did(pg_world, pg_schema, pg_url, tmp_path):
    chat = pg_world.chat
    old = [new_lead(chat) for _ in range(6)]
    fresh, customer = new_lead(chat), new_lead(chat)
    idle = [chat.send_message("", f"pytanie {i}").session_id for i in range(5)]
    recent = chat.send_message("", "świeże pytanie").session_id
    for lead_id in [*old, customer]:
        age(pg_world.db, 400, lead_id)
    for session_id in idle:
        age(pg_world.db, 100, session_id=session_id)
    privacy.mark_customer(pg_world.db, customer, True)

    env = {**os.environ, "DATABASE_URL": pg_url, "DB_SCHEMA": pg_schema, "DATA_DIR": str(tmp_path),
           "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "services.chat.manage", "purge-retention", "--batch-size", "1"]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(3)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 3, outputs

    def total(label: str) -> int:
        found = [re.search(rf"^{label}: (\d+)$", out, re.MULTILINE) for out in outputs]
        assert all(found), outputs
        return sum(int(match.group(1)) for match in found if match)

    assert (total("conversations deleted"), total("leads deleted")) == (5, 6)
    assert all("365 days" in out and "90 days" in out for out in outputs), outputs
    with pg_world.db.session() as s:
        assert set(s.scalars(select(Lead.id))) == {fresh, customer}
        remaining = set(s.scalars(select(Conversation.session_id)))
        assert len(remaining) == 3 and recent in remaining
        assert s.scalar(select(func.count()).select_from(Message)) == 2 * 10 + 2


def test_the_in_process_job_of_make_up_purges_both_and_says_what_it_did(tmp_path):
    with PeerServer() as peers:
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers, retention_interval_min=0.01)
        try:
            old_lead = new_lead(world.chat)
            idle = world.chat.send_message("", "pytanie").session_id
            age(world.db, 400, old_lead)
            age(world.db, 100, session_id=idle)
            world.app.jobs.start()
            wait_for(lambda: "retention-purge: conversations deleted 1, leads deleted 1" in world.app.jobs.state()[1],
                     what="the scheduled retention purge")
            with world.db.session() as s:
                assert s.scalar(select(func.count()).select_from(Conversation)) == 0
        finally:
            world.app.jobs.stop()
            world.db.dispose()
