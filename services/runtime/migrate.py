"""Alembic migrations, run programmatically: at server start in the local stack, as a Job in Kubernetes."""
from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from services.runtime.db import Database

log = logging.getLogger(__name__)


def alembic_config(db: Database, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def upgrade_to_head(db: Database, script_location: Path) -> None:
    """Bring the service's schema to the newest revision; safe when several replicas start at once."""
    cfg = alembic_config(db, script_location)
    with db.engine.begin() as conn:
        if db.is_postgres:
            # One migrator at a time per schema; the others wait, then find nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{db.schema}"})
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
            conn.execute(text(f'SET LOCAL search_path TO "{db.schema}"'))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("database schema is at head", extra={"db_service": db.service})
