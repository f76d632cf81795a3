"""SQLite: the claim index holds queued rows only

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

On SQLite a task's finish then writes no index page and its claim only removes
an entry. MySQL/MariaDB have no partial indexes; their index is unchanged.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = ['status', 'run_after', 'id']
# Partial indexes (CREATE INDEX ... WHERE) where the database has them.
PARTIAL = ('sqlite', 'postgresql')


def upgrade() -> None:
    if op.get_bind().dialect.name not in PARTIAL:
        return
    op.drop_index('ix_tasks_status_run_after', table_name='tasks')
    op.create_index('ix_tasks_status_run_after', 'tasks', COLUMNS,
                    sqlite_where=sa.text("status = 'queued'"), postgresql_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    if op.get_bind().dialect.name not in PARTIAL:
        return
    op.drop_index('ix_tasks_status_run_after', table_name='tasks')
    op.create_index('ix_tasks_status_run_after', 'tasks', COLUMNS)
