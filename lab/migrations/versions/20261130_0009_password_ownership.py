"""Passwords owned by their users and sessions that end on the server (issue 12, items 1 and 4)

Existing accounts keep their password as their own (an install upgraded cannot know who chose
it); an administrator who doubts it resets it, which makes it temporary.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_must_change', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('password_changed_at', lab.extensions.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('previous_password_hashes', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('sessions_ended_at', lab.extensions.UTCDateTime(timezone=True),
                                      nullable=True))
    op.execute(sa.text('UPDATE users SET password_changed_at = created_at'))
    # The default only filled the existing rows: PostgreSQL cannot compare JSON defaults, and new rows get one
    # from the model.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('previous_password_hashes', server_default=None)


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('sessions_ended_at')
        batch_op.drop_column('session_generation')
        batch_op.drop_column('previous_password_hashes')
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('password_must_change')
