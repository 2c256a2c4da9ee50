"""person owners, Nextcloud file ids and the tags this app assigned

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:55:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sink_tags',
    sa.Column('remote_id', sa.BigInteger(), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('remote_id', 'tag')
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remote_id', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_files_remote_id'), ['remote_id'], unique=False)

    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_persons_owner'), ['owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_persons_owner'))
        batch_op.drop_column('owner')

    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_files_remote_id'))
        batch_op.drop_column('remote_id')

    op.drop_table('sink_tags')
