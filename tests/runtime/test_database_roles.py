"""Least privilege on PostgreSQL: each service connects as a role that owns nothing; its tables belong to a migration
role that only migrations use, and consent's role can add to the ledger and read it but never change it."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from deploy.local import database_roles
from deploy.local.database_roles import ServiceRoles, url_as
from novahouse.consent.v1 import consent_pb2, consent_pb2_grpc
from services.runtime.db import Database, sqlalchemy_url
from services.runtime.migrate import upgrade_to_head
from testsupport import backing
from testsupport.consent import consent_service
from testsupport.stack import postgres_platform

pytestmark = pytest.mark.postgres

SERVICES = Path(__file__).resolve().parents[2] / "services"
MIGRATIONS = {svc: SERVICES / svc / "migrations" for svc in ("chat", "consent", "notifier")}


@pytest.fixture
def migrated():
    """Each service's schema migrated by its migration role; yields (roles, the service role's Database)."""
    with backing.service_roles("roles") as roles:
        databases = {}
        for svc, svc_roles in roles.items():
            env = svc_roles.env(backing.TEST_DATABASE_URL)
            databases[svc] = Database(svc, url=sqlalchemy_url(env["DATABASE_URL"]), schema=svc_roles.schema)
            upgrade_to_head(databases[svc], MIGRATIONS[svc], migration_url=env["MIGRATION_DATABASE_URL"])
        try:
            yield roles, databases
        finally:
            for db in databases.values():
                db.dispose()


def connect_as(roles: ServiceRoles, migrator: bool = False) -> psycopg.Connection:
    env = roles.env(backing.TEST_DATABASE_URL)
    url = env["MIGRATION_DATABASE_URL" if migrator else "DATABASE_URL"]
    return psycopg.connect(url, autocommit=True, options=f"-csearch_path={roles.schema}")


def owners(schema: str) -> dict[str, str]:
    """Table, sequence and view -> owning role, for one schema."""
    with backing.postgres_connect() as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S')", (schema,)).fetchall()
    return dict(rows)


def refusal(conn: psycopg.Connection, statement: str) -> str:
    """PostgreSQL's message refusing the statement (the test fails if it runs)."""
    with pytest.raises(errors.InsufficientPrivilege) as refused:
        conn.execute(statement)
    return str(refused.value)


def test_consent_role_can_append_to_the_ledger_and_read_it_but_not_change_truncate_or_alter_it(migrated):
    roles, databases = migrated
    consent = roles["consent"]
    service = consent_service(databases["consent"])
    service.record_consent(f"roles.{uuid.uuid4().hex[:8]}@example.org", True, True, "v1", "test")
    service.unsubscribe(f"roles.{uuid.uuid4().hex[:8]}@example.org")
    assert service.verify().ok

    with connect_as(consent) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_entries").fetchone() == (2,)
        # Refused by the privilege system, not by the ledger's append-only trigger (which a table owner can disable).
        for statement in ("ALTER TABLE ledger_entries DISABLE TRIGGER ALL", "DROP TABLE ledger_entries"):
            assert "must be owner of table ledger_entries" in refusal(conn, statement), statement
        for statement in ("UPDATE ledger_entries SET action = 'opt_in'", "DELETE FROM ledger_entries",
                          "TRUNCATE ledger_entries", "CREATE TABLE shadow_ledger (seq bigint)",
                          "UPDATE alembic_version SET version_num = '0'"):
            assert "permission denied" in refusal(conn, statement), statement
        assert "must be owner" in refusal(conn, "ALTER TABLE ledger_head DISABLE TRIGGER ALL")
    with connect_as(consent, migrator=True) as conn:
        rights = conn.execute(
            "SELECT p, has_table_privilege(%s, 'ledger_entries', p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE',"
            " 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p", (consent.role,)).fetchall()
    assert dict(rights) == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False,
                            "REFERENCES": False, "TRIGGER": False}


def test_no_service_role_owns_anything_and_the_migration_role_owns_every_table(migrated):
    roles, _ = migrated
    for svc, svc_roles in roles.items():
        owned = owners(svc_roles.schema)
        assert "alembic_version" in owned and len(owned) >= 2, f"{svc}: {owned}"
        assert set(owned.values()) == {svc_roles.migrator}, f"{svc}: {owned}"
        with backing.postgres_connect() as conn:
            schema_owner = conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                                        (svc_roles.schema,)).fetchone()
        assert schema_owner == (svc_roles.migrator,)


def test_a_table_a_later_migration_adds_is_granted_to_the_service_role_by_the_next_upgrade(migrated):
    roles, databases = migrated
    notifier = roles["notifier"]
    with connect_as(notifier, migrator=True) as conn:
        conn.execute("CREATE TABLE later_table (id serial PRIMARY KEY, note text)")
    with connect_as(notifier) as conn:
        refusal(conn, "INSERT INTO later_table (note) VALUES ('before')")
    upgrade_to_head(databases["notifier"], MIGRATIONS["notifier"],
                    migration_url=notifier.env(backing.TEST_DATABASE_URL)["MIGRATION_DATABASE_URL"])
    with connect_as(notifier) as conn:
        conn.execute("INSERT INTO later_table (note) VALUES ('after')")
        assert conn.execute("SELECT note FROM later_table").fetchall() == [("after",)]
        refusal(conn, "ALTER TABLE later_table ADD COLUMN extra text")


def test_without_a_migration_url_the_one_role_migrates_and_owns_its_tables_as_before(pg_schema):
    db = Database("notifier", url=sqlalchemy_url(backing.TEST_DATABASE_URL), schema=pg_schema)
    try:
        upgrade_to_head(db, MIGRATIONS["notifier"], migration_url="")
    finally:
        db.dispose()
    assert set(owners(pg_schema).values()) == {db.engine.url.username}


def test_the_platform_serves_as_its_service_roles_and_leaves_no_role_behind(tmp_path):
    with postgres_platform(tmp_path, "rolesplat") as platform:
        roles = platform.roles
        internal = consent_pb2_grpc.ConsentInternalStub(platform.gw.channel(admin=True))
        internal.RecordConsent(consent_pb2.RecordConsentRequest(
            email=f"platform.{uuid.uuid4().hex[:8]}@example.org", processing_consent=True, marketing_consent=False,
            text_version="v1", source="test"), timeout=10)
        with backing.postgres_connect() as conn:
            users = {row[0] for row in conn.execute("SELECT usename FROM pg_stat_activity WHERE usename IS NOT NULL")}
            entries = conn.execute(f'SELECT count(*) FROM "{roles["consent"].schema}".ledger_entries').fetchone()
        assert {r.role for r in roles.values()} <= users
        assert entries == (1,)
        for svc_roles in roles.values():
            assert set(owners(svc_roles.schema).values()) == {svc_roles.migrator}
    names = [name for r in roles.values() for name in (r.role, r.migrator)]
    with backing.postgres_connect() as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall()
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                               ([r.schema for r in roles.values()],)).fetchall()
    assert left == [] and schemas == []


def test_a_url_keeps_its_server_and_database_with_another_user():
    url = url_as("postgresql://admin:secret@db.example:5433/novahouse?sslmode=require", "novahouse_chat", "p@ss")
    assert url == "postgresql://novahouse_chat:p%40ss@db.example:5433/novahouse?sslmode=require"


def test_roles_made_for_a_schema_the_admin_migrated_take_over_its_tables_and_functions(pg_schema):
    admin = Database("consent", url=sqlalchemy_url(backing.TEST_DATABASE_URL), schema=pg_schema)
    try:
        upgrade_to_head(admin, MIGRATIONS["consent"], migration_url="")
    finally:
        admin.dispose()
    roles = ServiceRoles.named("consent", backing.unique_name("adopt"), schema=pg_schema)
    try:
        with backing.postgres_connect() as conn:
            database_roles.create(conn, roles)
            database_roles.create(conn, roles)  # idempotent
            functions = conn.execute(
                "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n"
                " ON n.oid = p.pronamespace WHERE n.nspname = %s", (pg_schema,)).fetchall()
        assert set(owners(pg_schema).values()) == {roles.migrator}
        assert functions == [(roles.migrator,)]
        env = roles.env(backing.TEST_DATABASE_URL)
        db = Database("consent", url=sqlalchemy_url(env["DATABASE_URL"]), schema=pg_schema)
        try:
            upgrade_to_head(db, MIGRATIONS["consent"], migration_url=env["MIGRATION_DATABASE_URL"])
            consent_service(db).record_consent(f"adopt.{uuid.uuid4().hex[:8]}@example.org", True, False, "v1", "t")
        finally:
            db.dispose()
    finally:
        with backing.postgres_connect() as conn:
            database_roles.drop(conn, roles)


def test_the_init_containers_wait_ends_once_the_migration_role_has_brought_the_schema_to_head(tmp_path):
    with backing.service_roles("wait", ("notifier",)) as roles:
        env = roles["notifier"].env(backing.TEST_DATABASE_URL)
        service_only = {**os.environ, "DATA_DIR": str(tmp_path), "DATABASE_URL": env["DATABASE_URL"],
                        "DB_SCHEMA": env["DB_SCHEMA"]}
        argv = [sys.executable, "-m", "services.runtime.schema_wait", "notifier", "--interval-s", "0.1"]
        before = subprocess.run([*argv, "--timeout-s", "0"], env=service_only, capture_output=True, text=True,
                                timeout=60)
        assert before.returncode == 1 and "not at head" in before.stderr, before.stderr
        migrating = subprocess.run([sys.executable, "-m", "services.notifier.manage", "migrate"],
                                   env={**service_only, **env}, capture_output=True, text=True, timeout=120)
        assert migrating.returncode == 0, migrating.stderr
        after = subprocess.run([*argv, "--timeout-s", "30"], env=service_only, capture_output=True, text=True,
                               timeout=60)
        assert after.returncode == 0 and "at head" in after.stdout, after.stderr
        assert set(owners(env["DB_SCHEMA"]).values()) == {roles["notifier"].migrator}
