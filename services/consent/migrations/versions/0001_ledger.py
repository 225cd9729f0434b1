"""The consent ledger, its head, subjects, current state and pending erasures; the ledger refuses UPDATE and DELETE.

Revision ID: 0001
Revises:
Create Date: 2025-01-20
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True

GENESIS_HASH = "0" * 64

PG_APPEND_ONLY = [
    """
    CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_entries_no_update_delete BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()
    """,
    """
    CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()
    """,
]

SQLITE_APPEND_ONLY = [
    """
    CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: DELETE refused'); END
    """,
]


def upgrade() -> None:
    big_int = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    op.create_table(
        "ledger_entries",
        sa.Column("seq", big_int, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("processing_consent", sa.Boolean, nullable=False),
        sa.Column("marketing_consent", sa.Boolean, nullable=False),
        sa.Column("text_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("lead_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("email_enc", sa.LargeBinary, nullable=True),
        sa.Column("client_ip_enc", sa.LargeBinary, nullable=True),
        sa.Column("user_agent_enc", sa.LargeBinary, nullable=True),
        sa.Column("reason_enc", sa.LargeBinary, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("request_id", name="uq_ledger_entries_request_id"),
        sa.UniqueConstraint("prev_hash", name="uq_ledger_entries_prev_hash"),
        sa.UniqueConstraint("entry_hash", name="uq_ledger_entries_entry_hash"),
    )
    op.create_index("ix_ledger_entries_subject_id", "ledger_entries", ["subject_id"])

    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "entry_hash": GENESIS_HASH}])

    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(32), primary_key=True),
        sa.Column("subject_hash", sa.String(64), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("subject_hash", name="uq_subjects_subject_hash"),
    )
    op.create_table(
        "consent_state",
        sa.Column("subject_id", sa.String(32), primary_key=True),
        sa.Column("processing_consent", sa.Boolean, nullable=False),
        sa.Column("marketing_consent", sa.Boolean, nullable=False),
        sa.Column("last_action", sa.String(32), nullable=False),
        sa.Column("last_action_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "pending_erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("email_enc", sa.LargeBinary, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("subject_id", name="uq_pending_erasures_subject"),
    )
    op.create_index("ix_pending_erasures_next_attempt_at", "pending_erasures", ["next_attempt_at"])

    statements = PG_APPEND_ONLY if op.get_bind().dialect.name == "postgresql" else SQLITE_APPEND_ONLY
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE ledger_entries")
        op.execute("DROP FUNCTION ledger_entries_append_only()")
    else:
        op.drop_table("ledger_entries")
    for table in ("pending_erasures", "consent_state", "subjects", "ledger_head"):
        op.drop_table(table)
