"""A visitor who asks for a person, or whom the bot failed to understand twice in a row, is handed to one: the
conversation records when (handoff_at) and counts the messages in a row it did not understand. And a returning
visitor is found by phone as well as by email: lead.phone gets the index lead.email has.

Both columns are new and have defaults, so pods of the previous release neither read nor write them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("not_understood", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("handoff_at", sa.DateTime(), nullable=True))
    op.create_index("ix_lead_phone", "lead", ["phone"])


def downgrade() -> None:
    op.drop_index("ix_lead_phone", "lead")
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("handoff_at")
        batch.drop_column("not_understood")
