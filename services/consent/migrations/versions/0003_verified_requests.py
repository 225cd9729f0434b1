"""Verified requests: the ids of used action tokens (each emailed link works once) and the verification emails sent
per address (the throttle counts them, by the address's keyed hash).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    # New tables only: pods of the previous release never touch them.
    op.create_table(
        "used_action_tokens",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_used_action_tokens_expires_at", "used_action_tokens", ["expires_at"])
    op.create_table(
        "verification_emails",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_verification_emails_address_hash", "verification_emails", ["address_hash"])
    op.create_index("ix_verification_emails_sent_at", "verification_emails", ["sent_at"])


def downgrade() -> None:
    op.drop_table("verification_emails")
    op.drop_table("used_action_tokens")
