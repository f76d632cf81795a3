"""rate limits: tasks.rate_key, rate_limit and rate_window, and the task_rate_starts log

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

A rate-limited task's start is logged with the moment it stops counting
(counts_until); a start is allowed while fewer than rate_limit of its key's
starts still count.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
ExactKey = sa.String(length=200).with_variant(mysql.VARCHAR(200, collation='utf8mb4_bin'), 'mysql', 'mariadb')


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('rate_key', ExactKey, nullable=True))
        batch_op.add_column(sa.Column('rate_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('rate_window', sa.Float(), nullable=True))
    op.create_table(
        'task_rate_starts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('rate_key', ExactKey, nullable=False),
        sa.Column('counts_until', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_task_rate_starts')),
    )
    op.create_index('ix_task_rate_starts_key', 'task_rate_starts', ['rate_key', 'counts_until'])
    op.create_index(op.f('ix_task_rate_starts_counts_until'), 'task_rate_starts', ['counts_until'])


def downgrade() -> None:
    op.drop_table('task_rate_starts')
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('rate_window')
        batch_op.drop_column('rate_limit')
        batch_op.drop_column('rate_key')
