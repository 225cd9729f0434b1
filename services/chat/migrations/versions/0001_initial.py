"""conversations, messages, leads, follow-up claims, erasures

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None
# The previous release runs on the schema this leaves (docs/migrations.md).
previous_release_compatible = True


def upgrade() -> None:
    op.create_table('conversation',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_activity_at', sa.DateTime(), nullable=False),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('awaiting_slot', sa.String(length=16), nullable=True),
    sa.Column('slots', sa.JSON(), nullable=False),
    sa.Column('lead_id', sa.String(length=32), nullable=True),
    sa.Column('contact_email', sa.String(length=254), nullable=True),
    sa.Column('marketing_consent', sa.Boolean(), nullable=False),
    sa.Column('converted', sa.Boolean(), nullable=False),
    sa.Column('followups_sent', sa.Integer(), nullable=False),
    sa.Column('followups_stopped', sa.Boolean(), nullable=False),
    sa.Column('last_followup_at', sa.DateTime(), nullable=True),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id')
    )
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_contact_email'), ['contact_email'], unique=False)
        batch_op.create_index(
            'ix_conversation_followup_due', ['marketing_consent', 'followups_stopped', 'followups_sent'], unique=False
        )
        batch_op.create_index('ix_conversation_retention', ['lead_id', 'last_activity_at'], unique=False)

    op.create_table('erasure_request',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('conversations', sa.Integer(), nullable=False),
    sa.Column('messages_erased', sa.Integer(), nullable=False),
    sa.Column('leads_anonymised', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.create_table('followup_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('followup_number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('conversation_id', 'followup_number', name='uq_followup_once')
    )
    with op.batch_alter_table('followup_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_followup_event_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_followup_event_sent_at'), ['sent_at'], unique=False)

    op.create_table('lead',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('phone', sa.String(length=16), nullable=True),
    sa.Column('city', sa.String(length=80), nullable=True),
    sa.Column('area_m2', sa.Integer(), nullable=True),
    sa.Column('budget_pln', sa.Integer(), nullable=True),
    sa.Column('start', sa.String(length=80), nullable=True),
    sa.Column('start_months', sa.Integer(), nullable=True),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('processing_consent', sa.Boolean(), nullable=False),
    sa.Column('marketing_consent', sa.Boolean(), nullable=False),
    sa.Column('consent_text_version', sa.String(length=64), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('consent_recorded_at', sa.DateTime(), nullable=True),
    sa.Column('notified_at', sa.DateTime(), nullable=True),
    sa.Column('anonymised_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('conversation_id')
    )
    with op.batch_alter_table('lead', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_email'), ['email'], unique=False)

    op.create_table('message',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversation.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_conversation_id'), ['conversation_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_conversation_id'))

    op.drop_table('message')
    with op.batch_alter_table('lead', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_email'))

    op.drop_table('lead')
    with op.batch_alter_table('followup_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_followup_event_sent_at'))
        batch_op.drop_index(batch_op.f('ix_followup_event_conversation_id'))

    op.drop_table('followup_event')
    op.drop_table('erasure_request')
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_retention')
        batch_op.drop_index('ix_conversation_followup_due')
        batch_op.drop_index(batch_op.f('ix_conversation_contact_email'))

    op.drop_table('conversation')
