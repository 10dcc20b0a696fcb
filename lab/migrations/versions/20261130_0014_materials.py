"""Material items, lots, incoming QC, consumption and recall (issue 13, item 1)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'material_items',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('material', sa.String(length=64), nullable=False),
        sa.Column('supplier', sa.String(length=128), nullable=False),
        sa.Column('catalogue_number', sa.String(length=64), nullable=False),
        sa.Column('storage', sa.String(length=128), nullable=False),
        sa.Column('unit', sa.String(length=16), nullable=False),
        sa.Column('needs_qc', sa.Boolean(), nullable=False),
        sa.Column('created_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_material_items_created_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_material_items')),
        sa.UniqueConstraint('name', name=op.f('uq_material_items_name')),
    )
    with op.batch_alter_table('material_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_material_items_material'), ['material'], unique=False)

    with op.batch_alter_table('material_lots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('item_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('quantity_received', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('balance', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('unit', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('container_count', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('received_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('received_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('certificate_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('titer', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_material_lots_item_id'), ['item_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_material_lots_item_id_material_items'), 'material_items',
                                    ['item_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_material_lots_received_by_id_users'), 'users',
                                    ['received_by_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_material_lots_certificate_id_attachments'), 'attachments',
                                    ['certificate_id'], ['id'])
        batch_op.create_unique_constraint(batch_op.f('uq_material_lots_item_id'), ['item_id', 'lot_number'])

    op.create_table(
        'lot_checks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('lot_id', sa.Integer(), nullable=False),
        sa.Column('identity_ok', sa.Boolean(), nullable=False),
        sa.Column('condition_ok', sa.Boolean(), nullable=False),
        sa.Column('certificate_ok', sa.Boolean(), nullable=False),
        sa.Column('result', sa.String(length=8), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('checked_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('checked_by_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['checked_by_id'], ['users.id'], name=op.f('fk_lot_checks_checked_by_id_users')),
        sa.ForeignKeyConstraint(['lot_id'], ['material_lots.id'], name=op.f('fk_lot_checks_lot_id_material_lots')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_checks')),
    )
    with op.batch_alter_table('lot_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_checks_lot_id'), ['lot_id'], unique=False)

    op.create_table(
        'lot_decisions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('lot_id', sa.Integer(), nullable=False),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('decided_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('decided_by_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_lot_decisions_decided_by_id_users')),
        sa.ForeignKeyConstraint(['lot_id'], ['material_lots.id'],
                                name=op.f('fk_lot_decisions_lot_id_material_lots')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_decisions')),
    )
    with op.batch_alter_table('lot_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_decisions_lot_id'), ['lot_id'], unique=False)

    op.create_table(
        'lot_consumptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('lot_id', sa.Integer(), nullable=False),
        sa.Column('batch_id', sa.Integer(), nullable=False),
        sa.Column('entry_id', sa.Integer(), nullable=False),
        sa.Column('field_key', sa.String(length=64), nullable=False),
        sa.Column('quantity', sa.Float(), nullable=False),
        sa.Column('unit', sa.String(length=16), nullable=False),
        sa.Column('balance_after', sa.Float(), nullable=False),
        sa.Column('recorded_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
        sa.Column('recorded_by_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_lot_consumptions_batch_id_batches')),
        sa.ForeignKeyConstraint(['entry_id'], ['step_entries.id'],
                                name=op.f('fk_lot_consumptions_entry_id_step_entries')),
        sa.ForeignKeyConstraint(['lot_id'], ['material_lots.id'],
                                name=op.f('fk_lot_consumptions_lot_id_material_lots')),
        sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'],
                                name=op.f('fk_lot_consumptions_recorded_by_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_consumptions')),
    )
    with op.batch_alter_table('lot_consumptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_consumptions_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lot_consumptions_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lot_consumptions_lot_id'), ['lot_id'], unique=False)


def downgrade():
    with op.batch_alter_table('lot_consumptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lot_consumptions_lot_id'))
        batch_op.drop_index(batch_op.f('ix_lot_consumptions_entry_id'))
        batch_op.drop_index(batch_op.f('ix_lot_consumptions_batch_id'))
    op.drop_table('lot_consumptions')
    with op.batch_alter_table('lot_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lot_decisions_lot_id'))
    op.drop_table('lot_decisions')
    with op.batch_alter_table('lot_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lot_checks_lot_id'))
    op.drop_table('lot_checks')
    with op.batch_alter_table('material_lots', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_material_lots_item_id'), type_='unique')
        batch_op.drop_constraint(batch_op.f('fk_material_lots_certificate_id_attachments'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_material_lots_received_by_id_users'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_material_lots_item_id_material_items'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_material_lots_item_id'))
        for column in ('titer', 'certificate_id', 'received_by_id', 'received_on', 'container_count', 'unit',
                       'balance', 'quantity_received', 'item_id'):
            batch_op.drop_column(column)
    with op.batch_alter_table('material_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_material_items_material'))
    op.drop_table('material_items')
