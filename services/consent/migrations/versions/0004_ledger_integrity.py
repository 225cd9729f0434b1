"""Ledger integrity and consent wording: each entry names the chain key that keyed its hash (key_id, '' for the
unkeyed entries written before), carries the session, conversation and lead ids encrypted under the subject key
(references_enc; the plain columns stay empty for new entries), and may reference a stored consent wording by its
SHA-256 ("sha256:<64 hex>" in text_version, hence 80 characters). consent_texts holds each wording once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    # Adding columns with a constant default rewrites no row (and fires no row trigger); the append-only guard stays.
    op.add_column("ledger_entries", sa.Column("key_id", sa.String(16), nullable=False, server_default=""))
    op.add_column("ledger_entries", sa.Column("references_enc", sa.LargeBinary, nullable=True))
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce lengths
        op.alter_column("ledger_entries", "text_version", type_=sa.String(80), existing_type=sa.String(64),
                        existing_nullable=False)
    op.create_table(
        "consent_texts",
        sa.Column("text_hash", sa.String(64), primary_key=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("wording", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consent_texts")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("ledger_entries", "text_version", type_=sa.String(64), existing_nullable=False)
    op.drop_column("ledger_entries", "references_enc")
    op.drop_column("ledger_entries", "key_id")
