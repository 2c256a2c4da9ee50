"""video faces: the time of the frame each was found in

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-04 03:30:00
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('faces') as batch:
        batch.add_column(sa.Column('frame_time', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('faces') as batch:
        batch.drop_column('frame_time')
