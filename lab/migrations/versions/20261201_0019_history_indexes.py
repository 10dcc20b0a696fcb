"""Indexes for reads independent of the facility's history (issue 17): signatures by the record they
sign; for the clinic dashboard, a site's shipments by status and departure and containers by status

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
    op.create_index('ix_signatures_record', 'signatures', ['record_type', 'record_id'], unique=False)


def downgrade():
    op.drop_index('ix_signatures_record', table_name='signatures')
    op.drop_index(op.f('ix_containers_status'), table_name='containers')
    op.drop_index('ix_shipments_site_status_departed', table_name='shipments')
