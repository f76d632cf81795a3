"""The claim index also holds the task name

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Counting queued and running tasks per name (/api/stats, /metrics) then reads
the index alone: on MySQL it looked every queued row up for its name.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEX = 'ix_tasks_status_run_after'


def recreate(columns):
    op.drop_index(INDEX, table_name='tasks')
    if op.get_bind().dialect.name in ('sqlite', 'postgresql'):
        op.create_index(INDEX, 'tasks', columns, sqlite_where=sa.text("status = 'queued'"),
                        postgresql_where=sa.text("status = 'queued'"))
    else:
        op.create_index(INDEX, 'tasks', columns)


def upgrade() -> None:
    recreate(['status', 'run_after', 'id', 'name'])


def downgrade() -> None:
    recreate(['status', 'run_after', 'id'])
