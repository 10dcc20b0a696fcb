"""Signatures record which content their hash is over (issue 12: a signature covers every field a reader relies on)

Signatures stored before this revision were hashed over the earlier, narrower content: they
get hash_scheme 1 and are checked with that content; new signatures are made with scheme 2.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hash_scheme', sa.SmallInteger(), server_default='1', nullable=False))


def downgrade():
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_column('hash_scheme')
