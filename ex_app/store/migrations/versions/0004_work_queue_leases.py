"""work queue: task priorities, leases and the worker that claimed them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('worker', sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_tasks_lease_until'), ['lease_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_lease_until'))
        batch_op.drop_column('worker')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('priority')
