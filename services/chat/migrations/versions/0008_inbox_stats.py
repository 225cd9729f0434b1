"""The inbox's numbers (Inbox.GetStats) count today's and the week's conversations and handoffs: conversation gets an
index on created_at and one on handoff_at, so each count reads a range of an index instead of every conversation kept
(RETENTION_DAYS of them).

Indexes only: pods of the previous release are unaffected.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    op.create_index("ix_conversation_created_at", "conversation", ["created_at"])
    op.create_index("ix_conversation_handoff_at", "conversation", ["handoff_at"])


def downgrade() -> None:
    op.drop_index("ix_conversation_handoff_at", "conversation")
    op.drop_index("ix_conversation_created_at", "conversation")
