"""user decisions on persons and faces

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:51:12.600520
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('distinct_persons',
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('other_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['other_id'], ['persons.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('person_id', 'other_id')
    )
    op.create_table('face_rejections',
    sa.Column('face_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['face_id'], ['faces.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('face_id', 'person_id')
    )
    with op.batch_alter_table('face_rejections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_face_rejections_person_id'), ['person_id'], unique=False)

    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pose', sa.Float(), nullable=False, server_default='1.0'))
        batch_op.add_column(sa.Column('pinned', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmed', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('centroid', sa.LargeBinary(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_column('centroid')
        batch_op.drop_column('confirmed')

    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.drop_column('pinned')
        batch_op.drop_column('pose')

    with op.batch_alter_table('face_rejections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_face_rejections_person_id'))

    op.drop_table('face_rejections')
    op.drop_table('distinct_persons')
