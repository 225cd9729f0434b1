"""Alembic migrations, run programmatically: at server start in the local stack, as a Job in Kubernetes.

On PostgreSQL a service may connect as a role that owns nothing (DATABASE_URL) while its schema and tables belong to
a migration role that only migrations use (MIGRATION_DATABASE_URL). The migration then ends, in its own
transaction, by granting the service role exactly what the policy below allows on every table of the schema: a
table a future migration adds is covered without that migration doing anything, and a table re-created by one
cannot inherit wider rights. Without MIGRATION_DATABASE_URL (SQLite, or one role for everything) migrations run on
DATABASE_URL as before and nothing is granted.

A rollback runs the previous release against a schema one revision newer than it knows (docs/migrations.md). A
revision that keeps the previous release working (expand only) says so: `previous_release_compatible = True` in its
module. Every migration run records those declarations in the table alembic_compat (revision, compatible_with),
beside Alembic's alembic_version, so that the older code, which has never seen the newer revision's file, can read
the declaration: its migrate step then leaves the schema as it is, and it refuses a schema ahead of it that does not
declare itself compatible with its newest revision, with an error that says so.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from services.runtime.config import ConfigError, env_str
from services.runtime.db import Database, sqlalchemy_url

log = logging.getLogger(__name__)

MIGRATION_URL_ENV = "MIGRATION_DATABASE_URL"

# Tables a service appends to and reads, and never changes: its role gets SELECT and INSERT, no UPDATE, DELETE or
# TRUNCATE (and, owning nothing, no ALTER or DISABLE TRIGGER). Every other table gets SELECT, INSERT, UPDATE, DELETE.
APPEND_ONLY_TABLES: dict[str, tuple[str, ...]] = {"consent": ("ledger_entries",)}
# Alembic's bookkeeping: the service may read which revision it runs on, never change it.
READ_ONLY_TABLES = ("alembic_version", "alembic_compat")
COMPAT_TABLE = "alembic_compat"
COMPAT_MARKER = "previous_release_compatible"


class IncompatibleSchemaError(RuntimeError):
    """The database's schema is at a revision this release does not have, and that revision does not declare that
    this release's newest revision runs on it."""
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def alembic_config(db: Database, script_location: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def at_head(db: Database, script_location: Path) -> bool:
    """Whether db's schema is one this code runs on: at the newest revision of its migrations, or one revision
    ahead at a revision that declared itself compatible with it. Read as the service role, which may read
    alembic_version and alembic_compat and nothing more of them."""
    script = ScriptDirectory.from_config(alembic_config(db, script_location))
    with db.engine.connect() as conn:
        if set(MigrationContext.configure(conn).get_current_heads()) == set(script.get_heads()):
            return True
        try:
            return compatible_ahead(conn, script, db.service) is not None
        except IncompatibleSchemaError:
            return False


def compatible_ahead(conn: Connection, script: ScriptDirectory, service: str) -> str | None:
    """The revision the database is at when it is ahead of this code and declared compatible with this code's
    newest revision; None when this code knows every revision the database is at (it may migrate it)."""
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(conn).get_current_heads()
    unknown = [rev for rev in current if rev not in known]
    if not unknown:
        return None
    heads = script.get_heads()
    declared: dict[str, str] = {}
    if inspect(conn).has_table(COMPAT_TABLE):
        rows = conn.execute(text(f"SELECT revision, compatible_with FROM {COMPAT_TABLE}"))
        declared = {row[0]: row[1] for row in rows}
    if len(unknown) == 1 and len(heads) == 1 and declared.get(unknown[0]) == heads[0]:
        return unknown[0]
    ahead = ", ".join(unknown)
    why = (f"it declares itself compatible with {declared[unknown[0]]}, not with {heads[0]}"
           if len(unknown) == 1 and unknown[0] in declared else
           f"it does not declare itself compatible with {', '.join(heads)} ({COMPAT_MARKER} is not recorded)")
    raise IncompatibleSchemaError(
        f"the {service} database schema is at revision {ahead}, which this release does not have (its newest is "
        f"{', '.join(heads)}), and {why}: run the release that has {ahead}, or downgrade the schema with it first")


def record_compatibility(conn: Connection, script: ScriptDirectory) -> None:
    """Write every revision's compatibility declaration where an older release can read it (in conn's
    transaction, beside alembic_version)."""
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {COMPAT_TABLE} "
                      "(revision VARCHAR(32) PRIMARY KEY, compatible_with VARCHAR(32) NOT NULL)"))
    conn.execute(text(f"DELETE FROM {COMPAT_TABLE}"))
    rows = [{"revision": rev.revision, "compatible_with": rev.down_revision}
            for rev in script.walk_revisions()
            if getattr(rev.module, COMPAT_MARKER, False) is True and isinstance(rev.down_revision, str)]
    if rows:
        conn.execute(text(f"INSERT INTO {COMPAT_TABLE} (revision, compatible_with) "
                          "VALUES (:revision, :compatible_with)"), rows)


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
            script = ScriptDirectory.from_config(cfg)
            ahead = compatible_ahead(conn, script, db.service)
            if ahead is None:
                command.upgrade(cfg, "head")
                record_compatibility(conn, script)
            else:
                log.warning("database schema is one revision ahead of this release, which that revision declares "
                            "compatible; left as it is", extra={"db_service": db.service, "revision": ahead})
            if migrator is not None:
                grant_service_privileges(conn, db, migrator)
    finally:
        if migrator is not None:
            migrator.dispose()
    log.info("database schema is at head or compatibly ahead", extra={"db_service": db.service})


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
