"""the outbox: what each sink must still do, marked with the results that made it due;
"what finished since" is no longer asked (0006's index goes)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 03:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sink_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sink', sa.String(length=32), nullable=False),
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('user', sa.String(length=64), nullable=True),
    sa.Column('request', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('drainer', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sink_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sink_outbox_file_id'), ['file_id'], unique=False)
        batch_op.create_index('ix_sink_outbox_sink_lease_until', ['sink', 'lease_until'], unique=False)
    op.drop_index('ix_tasks_status_updated_at', table_name='tasks')


def downgrade() -> None:
    op.create_index('ix_tasks_status_updated_at', 'tasks', ['status', 'updated_at'], unique=False)
    with op.batch_alter_table('sink_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_sink_outbox_sink_lease_until')
        batch_op.drop_index(batch_op.f('ix_sink_outbox_file_id'))
    op.drop_table('sink_outbox')
