"""The inbox's numbers and a day's leads on a known set of conversations, seeded into the database of a chat server of
its own (SQLite and PostgreSQL), so that nothing else counts: today and the last 7 days in HANDOFF_TIMEZONE."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
import zoneinfo
from types import SimpleNamespace

import grpc
import pytest

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from novahouse.chat.v1 import chat_pb2, chat_pb2_grpc
from services.chat.app import MIGRATIONS
from services.chat.storage import Conversation, Lead, Message
from services.runtime.db import Database, sqlalchemy_url
from services.runtime.migrate import upgrade_to_head
from testsupport import backing

ZONE = zoneinfo.ZoneInfo("Europe/Warsaw")
STAFF = (("x-staff-agent", "anna"), ("x-staff-token-id", uuid.uuid4().hex), ("x-staff-name", "Anna Kowalska"))
COMPLETE: dict[str, str | int] = {
    "name": "Ewa Lis", "email": "ewa@example.com", "phone": "+48601602603", "city": "Gdynia", "area_m2": 60,
    "budget_amount": 150000, "budget_currency": "PLN", "budget_pln": 150000, "start": "asap", "start_months": 0,
}
PARTIAL: dict[str, str | int] = {"name": "Olek Mak", "phone": "+48601602604"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"inbox-stats-{request.param}")
    port = free_port()
    env = {**os.environ, "GRPC_PORT": str(port), "DATA_DIR": str(tmp), "SCHEDULER_ENABLED": "false",
           "HANDOFF_TIMEZONE": "Europe/Warsaw", "CONSENT_ADDR": f"127.0.0.1:{free_port()}",
           "NOTIFIER_ADDR": f"127.0.0.1:{free_port()}", "HEALTH_CHECK_INTERVAL_S": "0.2"}
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            schema = backing.unique_name("inbox_stats")
            stack.callback(backing.drop_schema, schema)
            env.update(DATABASE_URL=backing.TEST_DATABASE_URL, DB_SCHEMA=schema)
            db = Database("chat", url=sqlalchemy_url(backing.TEST_DATABASE_URL), schema=schema)
        else:
            env.pop("DATABASE_URL", None)
            db = Database("chat", url=f"sqlite:///{tmp / 'chat.db'}")
        stack.callback(db.dispose)
        upgrade_to_head(db, MIGRATIONS)
        days = seed(db)
        chat = ManagedProcess("chat", python_module("services.chat.server"), env, tmp).start()
        stack.callback(chat.stop)
        chat.wait_until(lambda: grpc_serving(f"127.0.0.1:{port}"), 60, "SERVING")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stack.callback(channel.close)
        yield SimpleNamespace(inbox=chat_pb2_grpc.InboxStub(channel), **days)


def seed(db: Database) -> dict:
    """Today: 6 conversations (5 with a visitor message), a complete and a partial lead, 4 handoffs of which 3 were
    answered after 30, 120 and 60 s. Three days ago: 2 more conversations, a partial lead, a handoff answered after
    90 s. Ten days ago (outside the week): a conversation with a complete lead and a handoff answered after 5 s."""
    today = dt.datetime.now(ZONE).date()

    def at(day: dt.date, minutes: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(0, 1), ZONE).astimezone(dt.UTC) + dt.timedelta(minutes=minutes)

    three, ten = today - dt.timedelta(days=3), today - dt.timedelta(days=10)
    # (day, minute, visitor wrote, lead, handoff answered after (s): None unanswered, False no handoff)
    plan = [
        (today, 0, True, COMPLETE, False), (today, 1, True, PARTIAL, False), (today, 2, True, None, 30),
        (today, 3, True, None, 120), (today, 4, False, None, None), (today, 5, True, None, 60),
        (three, 600, True, PARTIAL, 90), (three, 601, True, None, False),
        (ten, 600, True, COMPLETE, 5),
    ]
    leads: dict[str, list[str]] = {"today_leads": [], "three_days_leads": []}
    with db.session() as s:
        for day, minute, wrote, lead, answered in plan:
            created = at(day, minute)
            conv = Conversation(session_id=str(uuid.uuid4()), created_at=created, last_activity_at=created, slots={},
                                language="pl", message_count=2)
            if answered is not False:
                conv.handoff_at = created + dt.timedelta(seconds=5)
                if answered is not None:
                    conv.first_agent_reply_at = conv.handoff_at + dt.timedelta(seconds=answered)
            s.add(conv)
            s.flush()
            s.add(Message(conversation_id=conv.id, role="user" if wrote else "bot", text="Dzień dobry",
                          created_at=created))
            if lead is not None:
                lead_id = uuid.uuid4().hex
                s.add(Lead(id=lead_id, conversation_id=conv.id, created_at=created, language="pl", score=50,
                           processing_consent=True, marketing_consent=False, consent_text_version="v1", **lead))
                conv.lead_id = lead_id
                if day == today:
                    leads["today_leads"].insert(0, lead_id)
                elif day == three:
                    leads["three_days_leads"].append(lead_id)
    return {**leads, "three_days_ago": three.isoformat()}


def test_today_s_and_this_week_s_numbers(server):
    stats = server.inbox.GetStats(chat_pb2.GetStatsRequest(), metadata=STAFF)
    today, week = stats.today, stats.week
    assert (today.conversations, today.leads_complete, today.leads_partial, today.handoffs) == (6, 1, 1, 4)
    assert today.median_first_reply_seconds == 60.0
    assert today.conversion == pytest.approx(2 / 5)  # 2 of the 5 conversations where the visitor wrote
    assert (week.conversations, week.leads_complete, week.leads_partial, week.handoffs) == (8, 1, 2, 5)
    assert week.median_first_reply_seconds == 75.0  # of 30, 60, 90, 120
    assert week.conversion == pytest.approx(3 / 7)


def test_a_day_s_leads_newest_first_with_what_they_miss(server):
    today = server.inbox.ListLeads(chat_pb2.ListLeadsRequest(), metadata=STAFF).leads
    assert [lead.lead_id for lead in today] == server.today_leads
    partial, complete = today
    assert (partial.complete, list(partial.missing)) == (False, ["email", "city", "area_m2", "budget", "start"])
    assert (complete.complete, list(complete.missing), complete.status) == (True, [], "new")
    earlier = server.inbox.ListLeads(chat_pb2.ListLeadsRequest(day=server.three_days_ago), metadata=STAFF).leads
    assert [lead.lead_id for lead in earlier] == server.three_days_leads
