"""Equipment register, logbook and service status (issue 13, item 2)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('equipment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serial_number', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('location', sa.String(length=128), server_default='', nullable=False))
        batch_op.add_column(sa.Column('qualification', sa.String(length=16), server_default='qualified',
                                      nullable=False))
        batch_op.add_column(sa.Column('out_of_service_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('registered_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_equipment_registered_by_id_users'), 'users',
                                    ['registered_by_id'], ['id'])
        batch_op.create_unique_constraint(batch_op.f('uq_equipment_kind'), ['kind', 'serial_number'])
    with op.batch_alter_table('equipment', schema=None) as batch_op:  # the default only filled existing rows
        batch_op.alter_column('location', existing_type=sa.String(length=128), server_default=None)
    op.create_table(
        'equipment_log',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('equipment_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('performed_on', sa.Date(), nullable=False),
        sa.Column('performed_by', sa.String(length=128), nullable=False),
        sa.Column('what', sa.Text(), nullable=False),
        sa.Column('result', sa.String(length=8), nullable=True),
        sa.Column('next_due', sa.Date(), nullable=True),
        sa.Column('attachment_id', sa.Integer(), nullable=True),
        sa.Column('recorded_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('recorded_by_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['attachment_id'], ['attachments.id'],
                                name=op.f('fk_equipment_log_attachment_id_attachments')),
        sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'], name=op.f('fk_equipment_log_equipment_id_equipment')),
        sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_equipment_log_recorded_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_equipment_log')),
    )
    with op.batch_alter_table('equipment_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_equipment_log_equipment_id'), ['equipment_id'], unique=False)


def downgrade():
    with op.batch_alter_table('equipment_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_equipment_log_equipment_id'))
    op.drop_table('equipment_log')
    with op.batch_alter_table('equipment', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_equipment_kind'), type_='unique')
        batch_op.drop_constraint(batch_op.f('fk_equipment_registered_by_id_users'), type_='foreignkey')
        batch_op.drop_column('registered_by_id')
        batch_op.drop_column('out_of_service_reason')
        batch_op.drop_column('qualification')
        batch_op.drop_column('location')
        batch_op.drop_column('serial_number')
