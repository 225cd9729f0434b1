"""Migration 0004 completes the erasures made before it: leads that older releases only anonymised (their city, area,
budget and score still linking to the deliveries about the person) go with their emptied conversations; every other
lead and conversation stays, and leads gain the customer mark unset."""
from __future__ import annotations

from alembic import command
from sqlalchemy import text

from services.chat.app import MIGRATIONS
from services.runtime.db import Database
from services.runtime.migrate import alembic_config, upgrade_to_head


def test_0004_deletes_the_leads_earlier_erasures_anonymised_and_keeps_the_rest(tmp_path):
    db = Database("chat", url=f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        cfg = alembic_config(db, MIGRATIONS)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            for cid, lead_id, anonymised in ((1, "a" * 32, "2026-01-01 00:00:00"), (2, "b" * 32, None)):
                conn.execute(text(
                    "INSERT INTO conversation (id, session_id, created_at, last_activity_at, language, stage, slots,"
                    " lead_id, marketing_consent, converted, followups_sent, followups_stopped, message_count)"
                    " VALUES (:id, :session, '2026-01-01', '2026-01-01', 'pl', 'done', '{}', :lead, false, false, 1,"
                    " true, 2)"), {"id": cid, "session": f"session-{cid}", "lead": lead_id})
                conn.execute(text(
                    "INSERT INTO message (conversation_id, role, text, created_at) VALUES (:id, 'bot', 'Dzień dobry',"
                    " '2026-01-01')"), {"id": cid})
                conn.execute(text(
                    "INSERT INTO followup_event (conversation_id, followup_number, sent_at)"
                    " VALUES (:id, 1, '2026-01-02')"), {"id": cid})
                conn.execute(text(
                    "INSERT INTO lead (id, conversation_id, created_at, language, city, area_m2, budget_pln, score,"
                    " processing_consent, marketing_consent, consent_text_version, anonymised_at)"
                    " VALUES (:lead, :id, '2026-01-01', 'pl', 'Gdynia', 55, 150000, 80, true, false, 'v1', :at)"),
                    {"lead": lead_id, "id": cid, "at": anonymised})

        upgrade_to_head(db, MIGRATIONS)

        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT id, customer_at FROM lead")).all() == [("b" * 32, None)]
            assert conn.execute(text("SELECT session_id FROM conversation")).scalars().all() == ["session-2"]
            assert conn.execute(text("SELECT DISTINCT conversation_id FROM message")).scalars().all() == [2]
            assert conn.execute(text("SELECT conversation_id FROM followup_event")).scalars().all() == [2]
    finally:
        db.dispose()
