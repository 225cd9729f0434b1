"""Erasure reports: each erasure (after a revoke, or by phone) and what each of its steps did in every system, kept
after the subject's key is destroyed so the erasure can be proven. Counts and references only, never personal data;
an erasure by email is found again through a keyed hash of the address under its own label.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    # New tables only: pods of the previous release never touch them.
    op.create_table(
        "erasure_records",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lookup_hash", sa.String(64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_erasure_records_lookup_hash", "erasure_records", ["lookup_hash"])
    op.create_table(
        "erasure_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "system", "action", name="uq_erasure_steps_step"),
    )
    op.create_index("ix_erasure_steps_request_id", "erasure_steps", ["request_id"])


def downgrade() -> None:
    op.drop_table("erasure_steps")
    op.drop_table("erasure_records")
