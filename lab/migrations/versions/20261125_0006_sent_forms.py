"""Forms accepted once (issue: bench-ready interface)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

"""
import sqlalchemy as sa
from alembic import op

import lab.extensions

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sent_forms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('sent_at', lab.extensions.UTCDateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sent_forms_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sent_forms')),
    sa.UniqueConstraint('token', name=op.f('uq_sent_forms_token'))
    )


def downgrade():
    op.drop_table('sent_forms')
