"""Erasures: which erasure redacted a delivery, and what each erasure did or still does about each delivery.

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


def upgrade() -> None:
    # '' for a delivery no erasure touched; a redacted one is never replayed.
    op.add_column("deliveries", sa.Column("erasure_id", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_deliveries_ended", "deliveries", ["status", "updated_at"])
    op.create_table(
        "erasures",
        sa.Column("erasure_id", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(), nullable=False),
        sa.Column("deliveries_redacted", sa.Integer(), nullable=False),
        sa.Column("operator_notice_id", sa.String(32), nullable=False, server_default=""),
    )
    op.create_table(
        "erasure_actions",
        sa.Column("erasure_id", sa.String(64), sa.ForeignKey("erasures.erasure_id"), primary_key=True),
        sa.Column("delivery_id", sa.String(32), primary_key=True),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("follow_up_delivery_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasure_actions")
    op.drop_table("erasures")
    op.drop_index("ix_deliveries_ended", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("erasure_id")
