"""API tokens, submissions from instruments and other systems, and the token an audit entry came through (issue 16)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 03:00:00

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', lab.extensions.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_api_tokens_created_by_id_users')),
    sa.ForeignKeyConstraint(['revoked_by_id'], ['users.id'], name=op.f('fk_api_tokens_revoked_by_id_users')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_tokens_secret_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('submissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('sample_id', sa.String(length=128), nullable=True),
    sa.Column('measured_at', lab.extensions.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attachment_id', sa.Integer(), nullable=True),
    sa.Column('submitted_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('submitted_by_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=True),
    sa.Column('result_id', sa.Integer(), nullable=True),
    sa.Column('closed_at', lab.extensions.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by_id', sa.Integer(), nullable=True),
    sa.Column('closed_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['attachment_id'], ['attachments.id'], name=op.f('fk_submissions_attachment_id_attachments')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_submissions_batch_id_batches')),
    sa.ForeignKeyConstraint(['closed_by_id'], ['users.id'], name=op.f('fk_submissions_closed_by_id_users')),
    sa.ForeignKeyConstraint(['entry_id'], ['step_entries.id'], name=op.f('fk_submissions_entry_id_step_entries')),
    sa.ForeignKeyConstraint(['result_id'], ['qc_results.id'], name=op.f('fk_submissions_result_id_qc_results')),
    sa.ForeignKeyConstraint(['submitted_by_id'], ['users.id'], name=op.f('fk_submissions_submitted_by_id_users')),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_submissions_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions'))
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submissions_batch_id'), ['batch_id'], unique=False)

    with op.batch_alter_table('deviations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submission_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_deviations_submission_id_submissions'), 'submissions',
                                    ['submission_id'], ['id'])

    # A column added to the append-only trail: adding a column is not an UPDATE, and the
    # triggers stay in place (on SQLite, no batch mode: that would copy the table).
    op.add_column('audit_events', sa.Column('via', sa.String(length=128), nullable=True))


def downgrade():
    op.drop_column('audit_events', 'via')
    with op.batch_alter_table('deviations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_deviations_submission_id_submissions'), type_='foreignkey')
        batch_op.drop_column('submission_id')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submissions_batch_id'))
    op.drop_table('submissions')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))
    op.drop_table('api_tokens')
