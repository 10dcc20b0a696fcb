"""Process versions under change control (issue 13, item 3)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
