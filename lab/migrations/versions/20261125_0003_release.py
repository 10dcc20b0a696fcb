"""Release tests, deviation workflow, signatures and disposition (issue: release and QA sign-off)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dispositions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=128), nullable=False),
    sa.Column('state_before', sa.String(length=32), nullable=False),
    sa.Column('state_after', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('physician_name', sa.String(length=128), nullable=True),
    sa.Column('physician_request', sa.Text(), nullable=True),
    sa.Column('risk_assessment', sa.Text(), nullable=True),
    sa.Column('physician_confirmation', sa.Text(), nullable=True),
    sa.Column('record_sha256', sa.String(length=64), nullable=False),
    sa.Column('decided_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_dispositions_batch_id_batches')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_dispositions_decided_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispositions'))
    )
    with op.batch_alter_table('dispositions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispositions_batch_id'), ['batch_id'], unique=False)

    op.create_table('qc_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('test_key', sa.String(length=64), nullable=False),
    sa.Column('text', sa.String(length=255), nullable=False),
    sa.Column('number', sa.Float(), nullable=True),
    sa.Column('unit', sa.String(length=32), nullable=True),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('is_final', sa.Boolean(), nullable=False),
    sa.Column('spec_text', sa.String(length=128), nullable=False),
    sa.Column('message', sa.String(length=255), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('is_late', sa.Boolean(), nullable=False),
    sa.Column('recorded_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=False),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_qc_results_batch_id_batches')),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_qc_results_recorded_by_id_users')),
    sa.ForeignKeyConstraint(['supersedes_id'], ['qc_results.id'], name=op.f('fk_qc_results_supersedes_id_qc_results')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qc_results')),
    sa.UniqueConstraint('supersedes_id', name=op.f('uq_qc_results_supersedes_id'))
    )
    with op.batch_alter_table('qc_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qc_results_batch_id'), ['batch_id'], unique=False)

    op.create_table('signing_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('attempted_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('meaning', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_signing_failures_batch_id_batches')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_signing_failures_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_failures'))
    )
    with op.batch_alter_table('signing_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signing_failures_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_signing_failures_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_from', sa.String(length=32), nullable=True))

    with op.batch_alter_table('deviations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('result_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('classification', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('root_cause', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('impact', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('corrective_action', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('preventive_action', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('investigated_at', lab.extensions.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('investigated_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('closed_at', lab.extensions.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_deviations_result_id_qc_results'), 'qc_results', ['result_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_deviations_investigated_by_id_users'), 'users', ['investigated_by_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_deviations_closed_by_id_users'), 'users', ['closed_by_id'], ['id'])

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failed_signatures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('locked_at', lab.extensions.UTCDateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('locked_at')
        batch_op.drop_column('failed_signatures')

    with op.batch_alter_table('deviations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_deviations_closed_by_id_users'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_deviations_investigated_by_id_users'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_deviations_result_id_qc_results'), type_='foreignkey')
        batch_op.drop_column('closed_by_id')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('investigated_by_id')
        batch_op.drop_column('investigated_at')
        batch_op.drop_column('preventive_action')
        batch_op.drop_column('corrective_action')
        batch_op.drop_column('impact')
        batch_op.drop_column('root_cause')
        batch_op.drop_column('classification')
        batch_op.drop_column('result_id')

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('held_from')

    with op.batch_alter_table('signing_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signing_failures_user_id'))
        batch_op.drop_index(batch_op.f('ix_signing_failures_batch_id'))

    op.drop_table('signing_failures')
    with op.batch_alter_table('qc_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qc_results_batch_id'))

    op.drop_table('qc_results')
    with op.batch_alter_table('dispositions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispositions_batch_id'))

    op.drop_table('dispositions')
