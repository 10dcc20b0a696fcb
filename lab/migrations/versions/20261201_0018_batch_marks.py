"""Indexes for pages independent of the number of batches (issue 17): the audit trail by batch and id
(each batch's newest entry in one seek), batches by creation and by last change, with their state

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 06:30:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    # An index is not an UPDATE of the append-only trail: its triggers stay in place.
    changes = sa.text("table_name NOT IN ('downloads', 'issued_records')")
    op.create_index('ix_audit_events_batch_id_id', 'audit_events', ['batch_id', 'id'], unique=False,
                    sqlite_where=changes, postgresql_where=changes)
    op.create_index('ix_batches_created_at_state', 'batches', ['created_at', 'state'], unique=False)
    op.create_index('ix_batches_updated_at_state', 'batches', ['updated_at', 'state'], unique=False)
    open_batches = sa.text("state NOT IN ('released', 'rejected', 'shipped')")
    op.create_index('ix_batches_open_created_at', 'batches', ['created_at'], unique=False,
                    sqlite_where=open_batches, postgresql_where=open_batches)


def downgrade():
    op.drop_index('ix_batches_open_created_at', table_name='batches')
    op.drop_index('ix_batches_updated_at_state', table_name='batches')
    op.drop_index('ix_batches_created_at_state', table_name='batches')
    op.drop_index('ix_audit_events_batch_id_id', table_name='audit_events')
