"""Containers, labels printed and custody events (issue: labels and scanning)

Revision ID: 0002
Revises: e89668b53527
Create Date: 2026-11-25

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = 'e89668b53527'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('containers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('volume_ml', sa.Double(), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('location', sa.String(length=255), nullable=True),
    sa.Column('created_entry_id', sa.Integer(), nullable=False),
    sa.Column('created_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_containers_batch_id_batches')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_containers_created_by_id_users')),
    sa.ForeignKeyConstraint(['created_entry_id'], ['step_entries.id'], name=op.f('fk_containers_created_entry_id_step_entries')),
    sa.ForeignKeyConstraint(['parent_id'], ['containers.id'], name=op.f('fk_containers_parent_id_containers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_containers')),
    sa.UniqueConstraint('code', name=op.f('uq_containers_code'))
    )
    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_containers_batch_id'), ['batch_id'], unique=False)

    op.create_table('custody_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('container_id', sa.Integer(), nullable=True),
    sa.Column('scanned_code', sa.String(length=64), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=True),
    sa.Column('entry_id', sa.Integer(), nullable=True),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('from_location', sa.String(length=255), nullable=True),
    sa.Column('to_location', sa.String(length=255), nullable=True),
    sa.Column('matched', sa.Boolean(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('occurred_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_custody_events_actor_id_users')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_custody_events_batch_id_batches')),
    sa.ForeignKeyConstraint(['container_id'], ['containers.id'], name=op.f('fk_custody_events_container_id_containers')),
    sa.ForeignKeyConstraint(['entry_id'], ['step_entries.id'], name=op.f('fk_custody_events_entry_id_step_entries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custody_events'))
    )
    with op.batch_alter_table('custody_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_custody_events_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_custody_events_container_id'), ['container_id'], unique=False)

    op.create_table('label_prints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('container_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('printed_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('printed_by_id', sa.Integer(), nullable=False),
    sa.Column('is_reprint', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('output', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_label_prints_batch_id_batches')),
    sa.ForeignKeyConstraint(['container_id'], ['containers.id'], name=op.f('fk_label_prints_container_id_containers')),
    sa.ForeignKeyConstraint(['printed_by_id'], ['users.id'], name=op.f('fk_label_prints_printed_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_prints'))
    )
    with op.batch_alter_table('label_prints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_prints_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_prints_container_id'), ['container_id'], unique=False)



def downgrade():
    with op.batch_alter_table('label_prints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_prints_container_id'))
        batch_op.drop_index(batch_op.f('ix_label_prints_batch_id'))

    op.drop_table('label_prints')
    with op.batch_alter_table('custody_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_custody_events_container_id'))
        batch_op.drop_index(batch_op.f('ix_custody_events_batch_id'))

    op.drop_table('custody_events')
    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_containers_batch_id'))

    op.drop_table('containers')
