"""lead.customer_at (ChatAdmin.MarkCustomer), and the erasures made before this revision completed

Leads are now deleted after LEAD_RETENTION_DAYS unless marked as a customer, and an erasure deletes the person's
leads and conversations instead of blanking their identifying fields. The leads anonymised by earlier erasures still
hold city, area, budget and score, whose ids link back to the deliveries made about the person: they are deleted
here with their (already emptied) conversations, messages and follow-up claims.

lead.anonymised_at is no longer read or written, but it is not dropped here: during a rolling update, and after a
rollback, pods of the previous release still read it. A later migration drops it once no such release can run.
Adding a nullable column is safe for those pods: they neither write nor read it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True

_ERASED = "SELECT conversation_id FROM lead WHERE anonymised_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("lead", sa.Column("customer_at", sa.DateTime(), nullable=True))
    op.execute(f"DELETE FROM message WHERE conversation_id IN ({_ERASED})")
    op.execute(f"DELETE FROM followup_event WHERE conversation_id IN ({_ERASED})")
    op.execute("DELETE FROM lead WHERE anonymised_at IS NOT NULL")
    op.execute("DELETE FROM conversation WHERE lead_id IS NOT NULL AND lead_id NOT IN (SELECT id FROM lead)")


def downgrade() -> None:
    """The deleted rows do not come back: they were the remains of erasures."""
    with op.batch_alter_table("lead") as batch:
        batch.drop_column("customer_at")
