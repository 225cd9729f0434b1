"""Why each delivery is sent: 'marketing' ones go out only while their recipient's marketing consent is on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    # Rows queued before this revision have no purpose: '' (sent as before, without asking consent).
    op.add_column("deliveries", sa.Column("purpose", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("purpose")
