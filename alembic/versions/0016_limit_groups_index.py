"""ix_tasks_limit_groups: the limited claim's keys waiting, read off one index

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

Every limited claim first asks which limit keys have due tasks, with their
limits. Grouped off ix_tasks_limit it read each waiting row and sorted them;
this index holds the groups in order and every column asked for. Only where
indexes can be partial (SQLite, PostgreSQL): on MySQL every task would pay for it.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = ['status', 'limit_key', 'rate_key', 'concurrency', 'rate_limit', 'run_after', 'queue']


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect in ('sqlite', 'postgresql'):
        op.create_index('ix_tasks_limit_groups', 'tasks', COLUMNS,
                        **{f'{dialect}_where': sa.text('limit_key IS NOT NULL')})


def downgrade() -> None:
    if op.get_bind().dialect.name in ('sqlite', 'postgresql'):
        op.drop_index('ix_tasks_limit_groups', table_name='tasks')
