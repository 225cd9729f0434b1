"""What sales gets and when, with chat's own settings: a visitor gone quiet mid-questions is still handed over,
the board's column ids and the EUR rate come from configuration, leads an older release had not handed over
before the upgrade are handed over after it, and the visitor's reply never waits for the hand-over."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from alembic import command
from sqlalchemy import text

from services.chat.app import MIGRATIONS
from services.runtime.config import ConfigError
from services.runtime.db import Database
from services.runtime.migrate import alembic_config, upgrade_to_head
from services.runtime.request_context import REQUEST_ID_HEADER, request_scope
from tests.chat.conftest import build_world
from tests.chat.test_conversation import talk
from testsupport.peers import PeerServer, RecordingNotifier


class HeldNotifier(RecordingNotifier):
    """A notifier that holds every call until `release` is set, noting the request id each call carried."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.request_ids: list[str] = []

    def Notify(self, request, context):
        self.request_ids.append(dict(context.invocation_metadata()).get(REQUEST_ID_HEADER, ""))
        self.release.wait(30)
        return super().Notify(request, context)


def contact_then_silence(chat) -> str:
    replies = talk(chat, ["Chcę wycenę", "tak", "Alicja Wrona", "alicja.wrona@example.com"])
    assert "W jakim mieście" in replies[-1].reply and replies[-1].lead.lead_id == ""
    return replies[-1].session_id


def test_a_visitor_who_leaves_mid_questions_is_handed_over_as_partial_once_idle(world):
    contact_then_silence(world.chat)
    assert world.chat.hand_over_idle(dt.timedelta(minutes=30)) == 0  # still within LEAD_IDLE_MINUTES
    assert world.chat.hand_over_idle(dt.timedelta(0)) == 1
    [key] = [k for k in world.notifier.keys("lead:") if k.endswith(":monday")]
    columns = world.notifier.requests[key].monday.column_values
    assert (columns["partial"], columns["missing"]) == ("yes", "city, area_m2, budget, start")
    assert columns["email"] == "alicja.wrona@example.com" and columns["marketing_consent"] == "no"
    [record] = world.consent.recorded
    assert (record.processing_consent, record.marketing_consent) == (True, False)
    assert world.chat.hand_over_idle(dt.timedelta(0)) == 0  # once


def test_board_column_ids_and_the_eur_rate_come_from_configuration(tmp_path):
    with PeerServer() as peers:
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers,
                            monday_columns="email=email_mk1, budget_pln=", eur_pln_rate=4.3)
        try:
            replies = talk(world.chat, ["I want a quote", "yes", "Oliver Brown", "oliver@example.com", "Warsaw",
                                        "80 m2", "40 000 EUR", "asap"])
            stored = world.chat.send_message(replies[-1].session_id, "", marketing_consent=False)
        finally:
            world.db.dispose()
    columns = peers.notifier.requests[f"lead:{stored.lead.lead_id}:monday"].monday.column_values
    assert columns["email_mk1"] == "oliver@example.com" and "email" not in columns and "budget_pln" not in columns
    assert (columns["budget"], columns["budget_currency"]) == ("40000", "EUR")
    assert "budget 172000 PLN: +18" in columns["score_reasons"]  # 40 000 EUR at 4.3 is scored as 172 000 PLN


def test_an_unknown_board_field_stops_the_service_at_start(tmp_path):
    with PeerServer() as peers, pytest.raises(ConfigError, match="MONDAY_COLUMNS part 'emial=email_mk1'"):
        build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers, monday_columns="emial=email_mk1")


def test_leads_an_older_release_had_not_handed_over_are_handed_over_after_the_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    db = Database("chat", url=url)
    try:
        cfg = alembic_config(db, MIGRATIONS)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0004")
            conn.execute(text(
                "INSERT INTO conversation (id, session_id, created_at, last_activity_at, language, stage, slots,"
                " lead_id, marketing_consent, converted, followups_sent, followups_stopped, message_count)"
                " VALUES (1, '5f0c7a51-1d2e-4c4b-9a37-0c1f7e4b2a10', '2026-11-01', '2026-11-01', 'pl', 'done', '{}',"
                " :lead, false, false, 0, false, 2)"), {"lead": "c" * 32})
            conn.execute(text(
                "INSERT INTO lead (id, conversation_id, created_at, language, name, email, city, area_m2, budget_pln,"
                " score, processing_consent, marketing_consent, consent_text_version, consent_recorded_at)"
                " VALUES (:lead, 1, '2026-11-01', 'pl', 'Jan Nowak', 'jan.nowak@example.com', 'Gdynia', 55, 150000,"
                " 60, true, false, 'v1', '2026-11-01')"), {"lead": "c" * 32})
        upgrade_to_head(db, MIGRATIONS)
    finally:
        db.dispose()
    with PeerServer() as peers:
        world = build_world(url, peers)
        try:
            assert world.app.leads.retry_pending().delivered == 1
        finally:
            world.db.dispose()
    assert peers.notifier.keys("lead:") == [f"lead:{'c' * 32}:monday"]  # its consent was recorded before
    columns = peers.notifier.requests[f"lead:{'c' * 32}:monday"].monday.column_values
    assert (columns["budget"], columns["budget_currency"], columns["budget_pln"]) == ("150000", "PLN", "150000")


def test_a_returning_visitor_s_consent_is_recorded_under_the_email_given_this_time(world):
    first = talk(world.chat, ["Chcę wycenę", "tak", "Ola Nowak", "ola@example.com", "601 602 699", "nie wiem",
                              "nie wiem", "nie wiem"])
    lead_id = world.chat.send_message(first[-1].session_id, "", marketing_consent=False).lead.lead_id
    again = talk(world.chat, ["Chcę wycenę", "tak", "Ola Nowak", "ola.nowak@example.org, tel. 601 602 699",
                              "nie wiem", "nie wiem", "nie wiem", "nie wiem"])
    linked = world.chat.send_message(again[-1].session_id, "", marketing_consent=True)
    assert linked.lead.lead_id == lead_id  # the same phone: the same person, one lead
    assert [k for k in world.notifier.keys("lead:") if k.endswith(":monday")] == [f"lead:{lead_id}:monday"]
    statements = {(r.email, r.marketing_consent) for r in world.consent.recorded}
    assert statements == {("ola@example.com", False), ("ola.nowak@example.org", True)}


def test_the_reply_that_completes_a_lead_does_not_wait_for_sales_and_the_hand_over_keeps_its_request_id(tmp_path):
    held = HeldNotifier()
    with PeerServer(notifier=held) as peers:
        world = build_world(f"sqlite:///{tmp_path / 'chat.db'}", peers, peer_timeout_s=10.0)
        try:
            replies = talk(world.app.chat, ["Chcę wycenę", "tak", "Ewa Lis", "ewa.lis@example.com", "600 100 200",
                                            "Kraków", "60 m2", "200 tys. zł"])
            with request_scope("turn-that-completes-the-lead"):
                done = world.app.chat.send_message(replies[-1].session_id, "od maja")
                done = world.app.chat.send_message(done.session_id, "", marketing_consent=False)
            assert done.lead.lead_id and done.lead.complete  # answered while the notifier still holds the call
            assert world.notifier.keys("lead:") == []
            held.release.set()
            assert world.app.leads.wait_idle(10)
            assert f"lead:{done.lead.lead_id}:monday" in world.notifier.keys("lead:")
            assert set(held.request_ids) == {"turn-that-completes-the-lead"}
        finally:
            held.release.set()
            world.app.close()
