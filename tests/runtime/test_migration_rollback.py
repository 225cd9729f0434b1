"""A rollback runs the previous release on a schema one revision newer (issue 17, part 2; docs/migrations.md).

The newer release is this code's migrations plus a test revision; the database is migrated to it by the migration
role, then this release's migrate step, its schema wait (the init container) and its server run against it. A test
revision that declares itself compatible is accepted; one that does not, or an unrelated revision, is refused with
an error saying which revision and why. The lint over every service's migrations holds each revision to the rule.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from deploy.local.processes import ManagedProcess, free_port, grpc_serving, python_module
from services.runtime import migration_lint
from services.runtime.db import Database, sqlalchemy_url
from services.runtime.migrate import IncompatibleSchemaError, at_head, upgrade_to_head
from testsupport import backing

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "services" / "notifier" / "migrations"
TEST_REVISION = '''"""A test revision of the next release.

Revision ID: 9001
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None
previous_release_compatible = {compatible}


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("next_release_note", sa.Text(), nullable=True))
    op.create_table("next_release_things", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("next_release_things")
    op.drop_column("deliveries", "next_release_note")
'''


def head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    (only,) = ScriptDirectory.from_config(cfg).get_heads()
    return only


def next_release(tmp_path: Path, compatible: bool) -> Path:
    """This release's notifier migrations plus one revision on top."""
    location = tmp_path / f"next-{compatible}"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "9001_next.py").write_text(TEST_REVISION.format(head=head(), compatible=compatible))
    return location


@pytest.fixture
def notifier_roles():
    with backing.service_roles("rollback", services=("notifier",)) as roles:
        env = roles["notifier"].env(backing.TEST_DATABASE_URL)
        db = Database("notifier", url=sqlalchemy_url(env["DATABASE_URL"]), schema=roles["notifier"].schema)
        try:
            yield env, db
        finally:
            db.dispose()


def revision_of(db: Database) -> str:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def process_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **env, "REQUIRE_DATABASE_URL": "true", "DATA_DIR": str(tmp_path / "data"),
            "MIGRATE_ON_START": "true", "GRPC_HOST": "127.0.0.1", "METRICS_PORT": "0", "SHUTDOWN_GRACE_S": "2",
            "DLQ_PURGE_INTERVAL_HOURS": "0"}


def test_this_release_migrates_waits_and_serves_on_a_schema_one_compatible_revision_ahead(notifier_roles, tmp_path):
    env, db = notifier_roles
    upgrade_to_head(db, next_release(tmp_path, compatible=True), migration_url=env["MIGRATION_DATABASE_URL"])
    assert revision_of(db) == "9001"

    # the migrate step of this release (in-process, then the Job's command) leaves the newer schema as it is
    upgrade_to_head(db, MIGRATIONS, migration_url=env["MIGRATION_DATABASE_URL"])
    job = subprocess.run(python_module("services.notifier.manage", "migrate"), cwd=REPO, capture_output=True,
                         text=True, timeout=120, env=process_env(env, tmp_path))
    assert job.returncode == 0, job.stdout + job.stderr
    assert revision_of(db) == "9001"
    # the init container's wait, as the service role, sees a schema it runs on
    assert at_head(db, MIGRATIONS)
    wait = subprocess.run(python_module("services.runtime.schema_wait", "notifier", "--timeout-s", "5"), cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=process_env(env, tmp_path))
    assert wait.returncode == 0, wait.stderr
    # and the server starts, serves (its readiness checks the database) and writes through the newer schema
    port = free_port()
    server = ManagedProcess("notifier", python_module("services.notifier.server"),
                            {**process_env(env, tmp_path), "GRPC_PORT": str(port)}, tmp_path / "logs").start()
    try:
        server.wait_until(lambda: grpc_serving(f"127.0.0.1:{port}"), timeout=60, what="serving")
        purge = subprocess.run(python_module("services.notifier.manage", "purge-dlq"), cwd=REPO,
                               capture_output=True, text=True, timeout=120, env=process_env(env, tmp_path))
        assert purge.returncode == 0, purge.stdout + purge.stderr
    finally:
        server.stop()
    assert revision_of(db) == "9001"


def test_a_schema_ahead_at_a_revision_that_does_not_declare_compatibility_is_refused(notifier_roles, tmp_path):
    env, db = notifier_roles
    upgrade_to_head(db, next_release(tmp_path, compatible=False), migration_url=env["MIGRATION_DATABASE_URL"])

    with pytest.raises(IncompatibleSchemaError, match="at revision 9001, which this release does not have .* "
                                                      "does not declare itself compatible with"):
        upgrade_to_head(db, MIGRATIONS, migration_url=env["MIGRATION_DATABASE_URL"])
    job = subprocess.run(python_module("services.notifier.manage", "migrate"), cwd=REPO, capture_output=True,
                         text=True, timeout=120, env=process_env(env, tmp_path))
    assert job.returncode != 0
    assert "at revision 9001, which this release does not have" in job.stdout + job.stderr
    assert not at_head(db, MIGRATIONS)
    assert revision_of(db) == "9001"


def test_an_unrelated_revision_is_refused_with_a_clear_error(notifier_roles, tmp_path):
    env, db = notifier_roles
    upgrade_to_head(db, MIGRATIONS, migration_url=env["MIGRATION_DATABASE_URL"])
    migrator = Database("notifier", url=sqlalchemy_url(env["MIGRATION_DATABASE_URL"]), schema=db.schema)
    try:
        with migrator.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    finally:
        migrator.dispose()

    with pytest.raises(IncompatibleSchemaError, match="at revision f00dfeed, which this release does not have"):
        upgrade_to_head(db, MIGRATIONS, migration_url=env["MIGRATION_DATABASE_URL"])


def test_the_same_release_migrates_from_scratch_and_records_each_declaration(notifier_roles):
    env, db = notifier_roles
    upgrade_to_head(db, MIGRATIONS, migration_url=env["MIGRATION_DATABASE_URL"])
    with db.engine.connect() as conn:  # the service role reads the declarations (and cannot change them)
        rows = conn.execute(text("SELECT revision, compatible_with FROM alembic_compat"))
        declared = {row[0]: row[1] for row in rows}
    assert declared[head()] < head() and len(declared) >= 3


# --------------------------------------------------------------------------------------------------------- lint

def test_every_services_migrations_follow_the_expand_contract_rule():
    assert migration_lint.lint(REPO) == []
    assert len(migration_lint.revision_files(REPO)) >= 17
    result = subprocess.run([sys.executable, "-m", "services.runtime.migration_lint"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "follow the expand/contract rule" in result.stdout


@pytest.mark.parametrize(("body", "why"), [
    ('op.drop_column("deliveries", "purpose")', "op.drop_column drops a column"),
    ('op.alter_column("deliveries", "status", new_column_name="state")', "renames a column"),
    ('op.alter_column("deliveries", "status", type_=sa.Integer())', "changes a column's type"),
    ('op.alter_column("deliveries", "note", nullable=False)', "makes a column NOT NULL"),
    ('op.add_column("deliveries", sa.Column("owner", sa.Text(), nullable=False))',
     "adds a NOT NULL column without a server_default"),
    ('op.execute("ALTER TABLE deliveries RENAME COLUMN status TO state")', "raw SQL"),
    ('op.create_unique_constraint("uq", "deliveries", ["key"])', "adds a unique constraint"),
])
def test_a_revision_declared_compatible_that_contracts_fails_the_lint_naming_file_and_line(tmp_path, body, why):
    versions = tmp_path / "services" / "demo" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (versions / "0002_change.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\nrevision = '0002'\ndown_revision = '0001'\n"
        "previous_release_compatible = True\n\n\ndef upgrade() -> None:\n"
        f"    op.add_column('deliveries', sa.Column('extra', sa.Text(), nullable=True))\n    {body}\n")

    findings = [str(f) for f in migration_lint.lint(tmp_path)]

    assert len(findings) == 1
    assert findings[0].startswith("services/demo/migrations/versions/0002_change.py:11: ") and why in findings[0]
    # the same change, declared incompatible, is the author's decision (it blocks a rollback past it)
    path = versions / "0002_change.py"
    path.write_text(path.read_text().replace("compatible = True", "compatible = False"))
    assert migration_lint.lint(tmp_path) == []


def test_a_revision_without_the_declaration_fails_the_lint(tmp_path):
    versions = tmp_path / "services" / "demo" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (versions / "0001_first.py").write_text("revision = '0001'\ndown_revision = None\n\n\ndef upgrade() -> None:\n"
                                            "    pass\n")
    (versions / "0002_widen.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\nrevision = '0002'\ndown_revision = '0001'\n"
        "previous_release_compatible = True\n\n\ndef upgrade() -> None:\n"
        "    op.alter_column('t', 'c', type_=sa.String(80), existing_type=sa.String(64))\n")

    findings = [str(f) for f in migration_lint.lint(tmp_path)]

    assert findings == ["services/demo/migrations/versions/0001_first.py:1: no `previous_release_compatible = "
                        "True|False`: say whether the previous release runs on this schema (docs/migrations.md)"]
