"""Material items, lots, incoming QC, consumption and recall (issue 13, item 1)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
