"""unique tasks: task_keys, one row per idempotency key and the task it names

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

A primary key on the key makes two submits with one key race-free on SQLite
and MySQL alike (MySQL has no partial unique index to say "unfinished only");
the row goes with its task when retention deletes it.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
# Compared byte for byte on MySQL too (its default collation ignores case).
ExactKey = sa.String(length=200).with_variant(mysql.VARCHAR(200, collation='utf8mb4_bin'), 'mysql', 'mariadb')


def upgrade() -> None:
    op.create_table(
        'task_keys',
        sa.Column('key', ExactKey, nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('created_at', Timestamp, nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_keys_task_id_tasks'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_task_keys')),
    )
    op.create_index(op.f('ix_task_keys_task_id'), 'task_keys', ['task_id'])


def downgrade() -> None:
    # The index goes with the table (MySQL will not drop it alone: the foreign key needs it).
    op.drop_table('task_keys')
