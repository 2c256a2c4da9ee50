"""names from contacts: address books read, their contacts' faces, rejected suggestions

Revision ID: 0008
Revises: 0006 (0007 once it is merged: another branch adds it)
Create Date: 2026-12-04 03:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'contact_books',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=64), nullable=True),
        sa.Column('location', sa.Text(), nullable=False),
        sa.Column('sync_token', sa.Text(), nullable=False),
        sa.Column('embedder', sa.String(length=16), nullable=False),
        sa.Column('read_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('owner', 'location'),
    )
    op.create_index('ix_contact_books_owner', 'contact_books', ['owner'], unique=False)
    op.create_table(
        'contact_faces',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('book_id', sa.Integer(), nullable=False),
        sa.Column('uid', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('embedding', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['book_id'], ['contact_books.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_contact_faces_book_id', 'contact_faces', ['book_id'], unique=False)
    op.create_table(
        'contact_rejections',
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['persons.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('person_id', 'name'),
    )


def downgrade() -> None:
    op.drop_table('contact_rejections')
    op.drop_index('ix_contact_faces_book_id', table_name='contact_faces')
    op.drop_table('contact_faces')
    op.drop_index('ix_contact_books_owner', table_name='contact_books')
    op.drop_table('contact_books')
