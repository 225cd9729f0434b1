"""When the person made the statement the current state holds: a statement older than it no longer overrides it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    # Nullable, so pods of the previous release still upsert states without it; read as last_action_at when empty.
    op.add_column("consent_state", sa.Column("stated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE consent_state SET stated_at = last_action_at")


def downgrade() -> None:
    with op.batch_alter_table("consent_state") as batch:
        batch.drop_column("stated_at")
