"""Audit-trail reviews and exported anchors (issue 12, item 10)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'audit_reviews',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('period_from', sa.Date(), nullable=False),
        sa.Column('period_to', sa.Date(), nullable=False),
        sa.Column('findings', sa.Text(), nullable=False),
        sa.Column('reviewed_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('reviewed_by_id', sa.Integer(), nullable=False),
        sa.Column('head_entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('head_hash', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['reviewed_by_id'], ['users.id'], name=op.f('fk_audit_reviews_reviewed_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_reviews')),
    )
    with op.batch_alter_table('audit_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_reviews_reviewed_at'), ['reviewed_at'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_reviews_reviewed_at'))
    op.drop_table('audit_reviews')
