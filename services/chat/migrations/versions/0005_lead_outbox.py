"""Partial leads, corrections, returning visitors and requests (issue 13): the lead outbox, the budget's currency,
the latest request, and what the conversation already asked.

A lead is now handed over as soon as the visitor's contact and processing consent are known, and every later change
(a correction, a detail, a request, a returning visitor) must reach the consent service and the notifier too. Each
such message is queued in lead_outbox in the transaction that made the change and sent after it, in order; the two
hand-over timestamps of the lead could only say "created and told once". Leads still waiting for their hand-over
are queued here, so none is lost across the upgrade.

lead.consent_recorded_at and lead.notified_at are no longer read or written but stay: pods of the previous release
still read them during a rolling update and after a rollback (they would hand over again the leads made since,
under the same idempotency keys, which the other services answer with the first result).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True

_NOW = "CURRENT_TIMESTAMP"


def upgrade() -> None:
    op.create_table(
        "lead_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("lead_id", sa.String(32), nullable=False, index=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("key", sa.String(160), nullable=False, unique=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_lead_outbox_pending", "lead_outbox", ["sent_at", "id"])
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column("budget_amount", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("budget_currency", sa.String(3), nullable=True))
        batch.add_column(sa.Column("request_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("request_day", sa.String(10), nullable=True))
        batch.add_column(sa.Column("request_time", sa.String(16), nullable=True))
        batch.add_column(sa.Column("request_channel", sa.String(8), nullable=True))
        batch.add_column(sa.Column("requested_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("asked", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("request", sa.JSON(), nullable=True))
    op.execute("UPDATE lead SET budget_amount = budget_pln, budget_currency = 'PLN' WHERE budget_pln IS NOT NULL")
    # The leads an older release had not yet handed over, in the order it would have.
    op.execute(
        "INSERT INTO lead_outbox (lead_id, kind, key, details, created_at) SELECT id, 'consent', 'lead:' || id ||"
        f" ':' || 'consent', '{{}}', {_NOW} FROM lead WHERE consent_recorded_at IS NULL ORDER BY created_at"
    )
    op.execute(
        "INSERT INTO lead_outbox (lead_id, kind, key, details, created_at) SELECT id, 'monday_create', 'lead:' || id"
        f" || ':' || 'monday', '{{}}', {_NOW} FROM lead WHERE notified_at IS NULL ORDER BY created_at"
    )


def downgrade() -> None:
    """Leads still queued are marked as not handed over, for the previous release to retry."""
    op.execute(
        "UPDATE lead SET notified_at = NULL WHERE id IN (SELECT lead_id FROM lead_outbox WHERE sent_at IS NULL)"
    )
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("request")
        batch.drop_column("asked")
    with op.batch_alter_table("lead") as batch:
        for column in ("updated_at", "requested_at", "request_channel", "request_time", "request_day",
                       "request_kind", "budget_currency", "budget_amount"):
            batch.drop_column(column)
    op.drop_index("ix_lead_outbox_pending", "lead_outbox")
    op.drop_table("lead_outbox")
