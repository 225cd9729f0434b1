"""conversation.session_secret_hash: the SHA-256 of the secret that reads a transcript

The session id alone no longer reads a conversation (it is passed on to Slack and Monday.com); the visitor's client
gets a secret with the first reply and only its hash is kept. Conversations from before this revision have none
(NULL) and cannot be read through the public route. Adding a nullable column is safe while pods of the previous
release still run: they neither write nor read it.

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
    op.add_column("conversation", sa.Column("session_secret_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("session_secret_hash")
