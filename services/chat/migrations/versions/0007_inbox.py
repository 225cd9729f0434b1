"""The sales inbox (issue 15): a conversation's handoff state and the agent in it, agents' messages with their
author, a lead's sales status, the agent audit (who did what, when; never the values set), revoked staff tokens and
the agents present in the inbox.

Every column is new and nullable or defaulted, so pods of the previous release neither read nor write them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        # NULL: the bot answers; "waiting", "agent" or "callback" (SendMessageResponse.handoff).
        batch.add_column(sa.Column("handoff", sa.String(16), nullable=True))
        batch.add_column(sa.Column("handoff_reason", sa.String(16), nullable=True))
        batch.add_column(sa.Column("agent", sa.String(64), nullable=True))
        batch.add_column(sa.Column("taken_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("first_agent_reply_at", sa.DateTime(), nullable=True))
    op.create_index("ix_conversation_handoff", "conversation", ["handoff", "handoff_at"])
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("author", sa.String(64), nullable=True))
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="new"))
    op.create_index("ix_lead_created_at", "lead", ["created_at"])
    op.create_table(
        "agent_action",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=True, index=True),
        sa.Column("lead_id", sa.String(32), nullable=True, index=True),
        sa.Column("detail", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("ix_agent_action_at", "agent_action", ["at"])
    op.create_table(
        "staff_revoked_token",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "agent_presence",
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_presence")
    op.drop_table("staff_revoked_token")
    op.drop_index("ix_agent_action_at", "agent_action")
    op.drop_table("agent_action")
    op.drop_index("ix_lead_created_at", "lead")
    with op.batch_alter_table("lead") as batch:
        batch.drop_column("status")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("author")
    op.drop_index("ix_conversation_handoff", "conversation")
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("first_agent_reply_at")
        batch.drop_column("taken_at")
        batch.drop_column("agent")
        batch.drop_column("handoff_reason")
        batch.drop_column("handoff")
