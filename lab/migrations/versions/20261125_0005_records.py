"""Issued records and downloads (issue: audit trail and batch record)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('issued_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('canonical_json', sa.Text(), nullable=False),
    sa.Column('issued_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('issued_to_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_issued_records_batch_id_batches')),
    sa.ForeignKeyConstraint(['issued_to_id'], ['users.id'], name=op.f('fk_issued_records_issued_to_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issued_records')),
    sa.UniqueConstraint('digest', name=op.f('uq_issued_records_digest'))
    )
    with op.batch_alter_table('issued_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_issued_records_batch_id'), ['batch_id'], unique=False)

    op.create_table('downloads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('downloaded_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('downloaded_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_downloads_batch_id_batches')),
    sa.ForeignKeyConstraint(['downloaded_by_id'], ['users.id'], name=op.f('fk_downloads_downloaded_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_downloads'))
    )
    with op.batch_alter_table('downloads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_downloads_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_downloads_digest'), ['digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_downloads_downloaded_by_id'), ['downloaded_by_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_downloads_kind'), ['kind'], unique=False)


def downgrade():
    with op.batch_alter_table('downloads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_downloads_kind'))
        batch_op.drop_index(batch_op.f('ix_downloads_downloaded_by_id'))
        batch_op.drop_index(batch_op.f('ix_downloads_digest'))
        batch_op.drop_index(batch_op.f('ix_downloads_batch_id'))

    op.drop_table('downloads')
    with op.batch_alter_table('issued_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_issued_records_batch_id'))

    op.drop_table('issued_records')
