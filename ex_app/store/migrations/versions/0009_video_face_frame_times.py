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
    # In place, up and down: SQLite's batch mode copies the table, and dropping the old copy
    # takes the rows that reference it (face rejections) with it.
    op.add_column('faces', sa.Column('frame_time', sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column('faces', 'frame_time')  # SQLite 3.35+ drops a column in place
