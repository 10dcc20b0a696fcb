"""Process versions under change control (issue 13, item 3)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'process_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('title', sa.String(length=255), nullable=False),
        sa.Column('definition_id', sa.Integer(), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('change_reason', sa.Text(), nullable=False),
        sa.Column('uploaded_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('uploaded_by_id', sa.Integer(), nullable=True),
        sa.Column('approved_at', lab.extensions.UTCDateTime(timezone=True), nullable=True),
        sa.Column('approved_by_id', sa.Integer(), nullable=True),
        sa.Column('effective_from', lab.extensions.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['approved_by_id'], ['users.id'],
                                name=op.f('fk_process_versions_approved_by_id_users')),
        sa.ForeignKeyConstraint(['definition_id'], ['process_definitions.id'],
                                name=op.f('fk_process_versions_definition_id_process_definitions')),
        sa.ForeignKeyConstraint(['uploaded_by_id'], ['users.id'],
                                name=op.f('fk_process_versions_uploaded_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_process_versions')),
        sa.UniqueConstraint('definition_id', name=op.f('uq_process_versions_definition_id')),
        sa.UniqueConstraint('key', 'version', name=op.f('uq_process_versions_key')),
    )
    with op.batch_alter_table('process_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_process_versions_key'), ['key'], unique=False)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target_dose', sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('target_dose')
    with op.batch_alter_table('process_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_process_versions_key'))
    op.drop_table('process_versions')
