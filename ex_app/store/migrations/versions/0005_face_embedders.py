"""face embedders: each face and each person's centroid remember the embedder that made them

Faces stored before this revision were embedded by dlib's ResNet: they are marked "dlib", and
so are the persons whose centroid was computed from them. The faces task's model version
counts the detector alone from now on (a new embedder re-embeds stored faces instead of
detecting them again), so the version recorded up to here (YuNet + dlib's landmarks + dlib's
ResNet, as ex_app.work.pipeline wrote it) is rewritten to YuNet's: photos are not detected
again, and their faces keep their ids and every decision on them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 00:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The first 8 hex digits of each model's sha256, as model versions are written.
YUNET, DLIB_LANDMARKS, DLIB_ONNX = 'ebafce4e', 'c4b1e980', '428471a7'
FACES_VERSION_BEFORE = f'{YUNET}+{DLIB_LANDMARKS}+{DLIB_ONNX}'
FACES_VERSION_AFTER = YUNET


def upgrade() -> None:
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('embedder', sa.String(length=16), server_default='dlib', nullable=False)
        )
        batch_op.create_index(batch_op.f('ix_faces_embedder'), ['embedder'], unique=False)
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedder', sa.String(length=16), nullable=True))
    op.execute("UPDATE persons SET embedder = 'dlib' WHERE centroid IS NOT NULL")
    op.execute(
        f"UPDATE tasks SET model_version = '{FACES_VERSION_AFTER}' "
        f"WHERE analyzer = 'faces' AND model_version = '{FACES_VERSION_BEFORE}'"
    )


def downgrade() -> None:
    op.execute(
        f"UPDATE tasks SET model_version = '{FACES_VERSION_BEFORE}' "
        f"WHERE analyzer = 'faces' AND model_version = '{FACES_VERSION_AFTER}'"
    )
    # Dropped in place (SQLite 3.35+): a batch copy of the table would delete the old one's
    # rows with foreign keys on, and faces would lose their persons.
    op.drop_column('persons', 'embedder')
    op.drop_index('ix_faces_embedder', table_name='faces')
    op.drop_column('faces', 'embedder')
