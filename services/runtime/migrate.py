"""Alembic migrations, run programmatically: at server start in the local stack, as a Job in Kubernetes.

On PostgreSQL a service may connect as a role that owns nothing (DATABASE_URL) while its schema and tables belong to
a migration role that only migrations use (MIGRATION_DATABASE_URL). The migration then ends, in its own
transaction, by granting the service role exactly what the policy below allows on every table of the schema: a
table a future migration adds is covered without that migration doing anything, and a table re-created by one
cannot inherit wider rights. Without MIGRATION_DATABASE_URL (SQLite, or one role for everything) migrations run on
DATABASE_URL as before and nothing is granted.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from services.runtime.config import ConfigError, env_str
from services.runtime.db import Database, sqlalchemy_url

log = logging.getLogger(__name__)

MIGRATION_URL_ENV = "MIGRATION_DATABASE_URL"

# Tables a service appends to and reads, and never changes: its role gets SELECT and INSERT, no UPDATE, DELETE or
# TRUNCATE (and, owning nothing, no ALTER or DISABLE TRIGGER). Every other table gets SELECT, INSERT, UPDATE, DELETE.
APPEND_ONLY_TABLES: dict[str, tuple[str, ...]] = {"consent": ("ledger_entries",)}
# Alembic's bookkeeping: the service may read which revision it runs on, never change it.
READ_ONLY_TABLES = ("alembic_version",)
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def alembic_config(db: Database, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def at_head(db: Database, script_location: Path) -> bool:
    """Whether db's schema is at the newest revision of the migrations: read as the service role, which may read
    alembic_version and nothing more of it."""
    heads = set(ScriptDirectory.from_config(alembic_config(db, script_location)).get_heads())
    with db.engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads


def migration_database(db: Database, migration_url: str | None = None) -> Database | None:
    """The migration role's connection to db's schema (MIGRATION_DATABASE_URL), or None to migrate on db itself."""
    url = env_str(MIGRATION_URL_ENV, "") if migration_url is None else migration_url
    if not url or not db.is_postgres:
        return None
    return Database(db.service, url=sqlalchemy_url(url), schema=db.schema)


def upgrade_to_head(db: Database, script_location: Path, migration_url: str | None = None) -> None:
    """Bring the service's schema to the newest revision and, when a migration role does it, grant the service
    role its privileges; safe when several replicas start at once."""
    migrator = migration_database(db, migration_url)
    target = migrator or db
    try:
        cfg = alembic_config(target, script_location)
        with target.engine.begin() as conn:
            if target.is_postgres:
                # One migrator at a time per schema; the others wait, then find nothing to do.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"migrate:{target.schema}"})
                _create_schema(conn, str(target.schema))
                conn.execute(text(f'SET LOCAL search_path TO "{target.schema}"'))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if migrator is not None:
                grant_service_privileges(conn, db, migrator)
    finally:
        if migrator is not None:
            migrator.dispose()
    log.info("database schema is at head", extra={"db_service": db.service})


def _create_schema(conn: Connection, schema: str) -> None:
    """CREATE SCHEMA only when missing: a migration role given a schema made for it need not create any."""
    exists = conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar()
    if not exists:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))


def service_role(db: Database) -> str:
    role = db.engine.url.username
    if not role:
        raise ConfigError(f"DATABASE_URL must name its user when {MIGRATION_URL_ENV} is set (it is granted to)")
    if not _ROLE_NAME.match(role):
        raise ConfigError(f"the DATABASE_URL user {role!r} is not a plain role name")
    return role


def grant_service_privileges(conn: Connection, db: Database, migrator: Database) -> None:
    """Reset the service role's rights on every table and sequence of the schema to the policy, in conn's
    transaction (so the service never sees a table without its rights, nor one with more)."""
    role = service_role(db)
    if role == migrator.engine.url.username:
        return  # one role for both: it owns the tables
    schema = str(db.schema)
    tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalars())
    append_only = tables & set(APPEND_ONLY_TABLES.get(db.service, ()))
    read_only = tables & set(READ_ONLY_TABLES)
    statements = [
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
        *(f'REVOKE UPDATE, DELETE ON "{schema}"."{table}" FROM "{role}"' for table in sorted(append_only)),
        *(f'REVOKE INSERT, UPDATE, DELETE ON "{schema}"."{table}" FROM "{role}"' for table in sorted(read_only)),
        f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM "{role}"',
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"',
    ]
    for statement in statements:
        conn.execute(text(statement))
    log.info("service role granted its privileges", extra={"db_service": db.service, "tables": len(tables)})
