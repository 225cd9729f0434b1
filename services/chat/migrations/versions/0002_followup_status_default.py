"""followup_event.status gets a default: nothing reads it, and the code no longer writes it

Every row said 'sent' (a claim row is the send). The column is not dropped here: during a rolling update, and after
a rollback, pods of the previous release still insert it, so it only gains a default that lets the current code
leave it out. A later migration drops it once no release that writes it can run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    with op.batch_alter_table('followup_event', schema=None) as batch_op:
        batch_op.alter_column('status', server_default='sent')


def downgrade() -> None:
    with op.batch_alter_table('followup_event', schema=None) as batch_op:
        batch_op.alter_column('status', server_default=None)
