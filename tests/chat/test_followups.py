"""Follow-ups go out exactly once per (conversation, number), only with marketing consent at send time."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import grpc
import pytest
from sqlalchemy import func, select

from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from novahouse.notifier.v1 import notifier_pb2
from services.chat.storage import Conversation, FollowupEvent
from services.runtime.clock import utcnow
from testsupport.waiting import poll

HOUR = dt.timedelta(hours=1)


def seed_due(db, count: int, idle: dt.timedelta = 25 * HOUR, language: str = "pl") -> list[int]:
    """Conversations with a captured email and marketing consent, idle for `idle`."""
    then = utcnow() - idle
    with db.session() as s:
        rows = [
            Conversation(
                session_id=f"00000000-0000-4000-8000-{i:012d}",
                slots={},
                language=language,
                stage="done",
                contact_email=f"visitor{i}@example.com",
                marketing_consent=True,
                last_activity_at=then,
                created_at=then,
            )
            for i in range(count)
        ]
        s.add_all(rows)
        s.flush()
        return [row.id for row in rows]


def unsubscribe(peers, email: str) -> None:
    with grpc.insecure_channel(peers.address) as channel:
        consent_pb2_grpc.ConsentStub(channel).Unsubscribe(consent_pb2.UnsubscribeRequest(email=email), timeout=5)


@pytest.mark.postgres
def test_a_followup_another_replica_has_claimed_is_not_sent_again_on_postgresql(pg_world):
    """The claim is what keeps two replicas from both sending: a second claim of (conversation, number) ends as
    already sent, and no second email reaches the notifier."""
    [cid] = seed_due(pg_world.db, 1)
    pg_world.consent.allow_marketing(["visitor0@example.com"])
    with pg_world.db.session() as s:
        s.add(FollowupEvent(conversation_id=cid, followup_number=1))  # the other replica's committed claim
    assert pg_world.app.followups.send(cid, 1, utcnow()) == "already_sent"
    assert pg_world.notifier.keys() == []
    with pg_world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FollowupEvent)) == 1


@pytest.mark.postgres
def test_each_followup_number_of_a_conversation_is_sent_once_on_postgresql(pg_world):
    [cid] = seed_due(pg_world.db, 1)
    pg_world.consent.allow_marketing(["visitor0@example.com"])
    sender, now = pg_world.app.followups, utcnow()
    assert sender.send(cid, 1, now) == "sent"
    assert sender.send(cid, 1, now) == "already_sent"
    assert sender.send(cid, 2, now + 72 * HOUR) == "sent"
    assert pg_world.notifier.calls == {f"followup:{cid}:1": 1, f"followup:{cid}:2": 1}
    with pg_world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FollowupEvent)) == 2


def test_each_followup_goes_out_once_after_its_delay(world):
    [cid] = seed_due(world.db, 1)
    world.consent.allow_marketing(["visitor0@example.com"])
    scheduler, now = world.app.followups, utcnow()

    first = scheduler.run(now=now)
    assert (first.due, first.sent) == (1, 1)
    email = world.notifier.requests[f"followup:{cid}:1"].email
    assert email.to == "visitor0@example.com" and email.subject and email.body
    assert scheduler.run(now=now).due == 0  # a second run finds nothing
    assert scheduler.run(now=now + 47 * HOUR).due == 0  # follow-up 2 waits 72h - 24h after follow-up 1
    assert scheduler.run(now=now + 49 * HOUR).sent == 1
    assert scheduler.run(now=now + 146 * HOUR).sent == 1
    assert scheduler.run(now=now + 1000 * HOUR).due == 0  # three configured, three sent
    assert world.notifier.calls == {f"followup:{cid}:{n}": 1 for n in (1, 2, 3)}


def test_every_followup_is_a_marketing_email_that_states_the_right_to_object_with_a_one_click_link(world):
    [cid] = seed_due(world.db, 1, language="en")
    world.consent.allow_marketing(["visitor0@example.com"])
    scheduler, now = world.app.followups, utcnow()
    for later in (0, 49, 146):
        assert scheduler.run(now=now + later * HOUR).sent == 1
    for number in (1, 2, 3):
        request = world.notifier.requests[f"followup:{cid}:{number}"]
        url = request.email.headers["List-Unsubscribe"].strip("<>")
        assert request.purpose == notifier_pb2.PURPOSE_MARKETING  # the notifier asks consent before every attempt
        assert url.startswith("http") and "/api/unsubscribe/one-click?token=" in url
        assert request.email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert url in request.email.body and "right to object" in request.email.body


def test_a_claim_already_taken_counts_as_already_sent(world):
    [cid] = seed_due(world.db, 1)
    world.consent.allow_marketing(["visitor0@example.com"])
    with world.db.session() as s:
        s.add(FollowupEvent(conversation_id=cid, followup_number=1))
    assert world.app.followups.send(cid, 1, utcnow()) == "already_sent"
    assert world.notifier.keys() == []


def test_unsubscribe_between_scheduling_and_sending_means_no_send(world):
    [cid] = seed_due(world.db, 1)
    world.consent.allow_marketing(["visitor0@example.com"])
    scheduler = world.app.followups
    due = scheduler.due(utcnow(), limit=10)
    assert due == [(cid, 1)]

    unsubscribe(world.peers, "visitor0@example.com")
    assert scheduler.send(cid, 1, utcnow()) == "skipped_no_consent"
    assert world.notifier.keys() == []
    assert scheduler.run(now=utcnow() + 1000 * HOUR).due == 0  # the sequence stopped
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FollowupEvent)) == 0


def test_a_visitor_reply_stops_the_sequence(world):
    [cid] = seed_due(world.db, 1)
    world.consent.allow_marketing(["visitor0@example.com"])
    assert world.app.followups.run().sent == 1
    world.chat.send_message("00000000-0000-4000-8000-000000000000", "Dzień dobry, jeszcze się zastanawiam")
    assert world.app.followups.run(now=utcnow() + 1000 * HOUR).due == 0


def test_notifier_down_rolls_the_claim_back_and_a_later_run_sends(world):
    [cid] = seed_due(world.db, 1)
    world.consent.allow_marketing(["visitor0@example.com"])
    world.peers.stop()
    assert world.app.followups.run().failed == 1
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FollowupEvent)) == 0
    world.peers.start()
    poll(lambda: world.app.followups.run().sent, timeout=15, interval=0.2)
    assert world.notifier.calls == {f"followup:{cid}:1": 1}


@pytest.mark.postgres
def test_four_scheduler_processes_send_each_due_followup_exactly_once(pg_world, pg_schema, pg_url, tmp_path):
    conversations = seed_due(pg_world.db, 1000)
    pg_world.consent.allow_marketing([f"visitor{i}@example.com" for i in range(1000)])
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "DB_SCHEMA": pg_schema,
        "NOTIFIER_ADDR": pg_world.peers.address,
        "CONSENT_ADDR": pg_world.peers.address,
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "services.chat.manage", "run-followups"]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(4)]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, outputs

    counts = [re.search(r"sent: (\d+)", out) for out in outputs]
    assert all(counts), outputs
    assert sum(int(count.group(1)) for count in counts if count) == 1000, outputs
    assert len(pg_world.notifier.calls) == 1000
    assert set(pg_world.notifier.calls.values()) == {1}  # 0 duplicates at the receiver
    assert set(pg_world.notifier.calls) == {f"followup:{cid}:1" for cid in conversations}
    with pg_world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FollowupEvent)) == 1000
