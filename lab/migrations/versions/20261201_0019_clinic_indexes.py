"""Indexes for the clinic dashboard independent of a site's history (issue 17): a site's shipments
by status and departure, and containers by status (the bags at a site are few among many)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 10:05:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_shipments_site_status_departed', 'shipments', ['site_id', 'status', 'departed_at', 'id'],
                    unique=False)
    op.create_index(op.f('ix_containers_status'), 'containers', ['status'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_containers_status'), table_name='containers')
    op.drop_index('ix_shipments_site_status_departed', table_name='shipments')
