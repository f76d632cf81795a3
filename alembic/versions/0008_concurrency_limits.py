"""concurrency limits: tasks.limit_key and tasks.concurrency, task_limits, the limited claim index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

The plain claim leaves limited tasks alone, so the claim index also holds
limit_key; ix_tasks_limit serves the limited claim (a key's running count and
its due rows in claim order). task_limits holds one row per key: claimers of a
key take turns on it.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
# Compared byte for byte on MySQL too (its default collation ignores case).
ExactKey = sa.String(length=200).with_variant(mysql.VARCHAR(200, collation='utf8mb4_bin'), 'mysql', 'mariadb')
CLAIM = ['status', sa.text('priority DESC'), 'run_after', 'id', 'name', 'queue']


def create_index(name, columns, sqlite_where):
    """A tasks index, partial (WHERE sqlite_where) where the database has partial indexes."""
    dialect = op.get_bind().dialect.name
    where = {f'{dialect}_where': sa.text(sqlite_where)} if dialect in ('sqlite', 'postgresql') else {}
    op.create_index(name, 'tasks', columns, **where)


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('limit_key', ExactKey, nullable=True))
        batch_op.add_column(sa.Column('concurrency', sa.Integer(), nullable=True))
    op.drop_index('ix_tasks_claim', table_name='tasks')
    create_index('ix_tasks_claim', CLAIM + ['limit_key'], "status = 'queued'")
    create_index('ix_tasks_limit', ['status', 'limit_key', sa.text('priority DESC'), 'run_after', 'id'],
                 "limit_key IS NOT NULL")
    op.create_table(
        'task_limits',
        sa.Column('limit_key', ExactKey, nullable=False),
        sa.Column('created_at', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('limit_key', name=op.f('pk_task_limits')),
    )


def downgrade() -> None:
    op.drop_table('task_limits')
    op.drop_index('ix_tasks_limit', table_name='tasks')
    op.drop_index('ix_tasks_claim', table_name='tasks')
    create_index('ix_tasks_claim', CLAIM, "status = 'queued'")
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('concurrency')
        batch_op.drop_column('limit_key')
