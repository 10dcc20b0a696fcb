"""Weight corrections, and container labels outdated by a correction (issue 11: corrections reach what was made from them)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('weight_corrections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('old_weight_kg', sa.Numeric(precision=6, scale=2, asdecimal=False), nullable=False),
    sa.Column('new_weight_kg', sa.Numeric(precision=6, scale=2, asdecimal=False), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('corrected_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('corrected_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['corrected_by_id'], ['users.id'], name=op.f('fk_weight_corrections_corrected_by_id_users')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_weight_corrections_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_weight_corrections'))
    )
    with op.batch_alter_table('weight_corrections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_weight_corrections_patient_id'), ['patient_id'], unique=False)

    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('label_outdated_at', lab.extensions.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('label_outdated_reason', sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.drop_column('label_outdated_reason')
        batch_op.drop_column('label_outdated_at')

    with op.batch_alter_table('weight_corrections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_weight_corrections_patient_id'))

    op.drop_table('weight_corrections')
