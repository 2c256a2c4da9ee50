"""crawl at scale: an index for "which tasks finished since", asked every second

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 01:00:00
"""

from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_status_updated_at', 'tasks', ['status', 'updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_tasks_status_updated_at', table_name='tasks')
