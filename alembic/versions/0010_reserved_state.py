"""reserved: a task claimed ahead by a task process is not running until a worker starts it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Widens the status check to allow 'reserved' (every existing row still passes it)
and, on SQLite, adds the partial index that finds reserved rows for lease
recovery and counts, as ix_tasks_running does for running ones.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
NEW = "status IN ('queued', 'reserved', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    replace_status_check(OLD, NEW)
    dialect = op.get_bind().dialect.name
    if dialect in ('sqlite', 'postgresql'):
        op.create_index('ix_tasks_reserved', 'tasks', ['id'], **{f'{dialect}_where': sa.text("status = 'reserved'")})


def downgrade() -> None:
    # Reserved rows were never started: back in the queue, their claim not counted.
    op.execute("UPDATE tasks SET status = 'queued', owner = NULL, "
               "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
               "WHERE status = 'reserved'")
    if op.get_bind().dialect.name in ('sqlite', 'postgresql'):
        op.drop_index('ix_tasks_reserved', table_name='tasks')
    replace_status_check(NEW, OLD)


def replace_status_check(old, new):
    """Swap the tasks table's status CHECK constraint."""
    if op.get_bind().dialect.name == 'sqlite':
        replace_sqlite_check(old, new)
        return
    op.drop_constraint(op.f('ck_tasks_status'), 'tasks', type_='check')
    op.create_check_constraint(op.f('ck_tasks_status'), 'tasks', sa.text(new))


def replace_sqlite_check(old, new):
    """SQLite cannot alter a constraint; its documented way for a change that leaves every
    stored row valid is to edit the table's schema text (sqlite.org/lang_altertable.html,
    "making other kinds of table schema changes"). Rebuilding a table of 10^6 rows instead
    would hold the write lock for minutes and lose its partial, descending indexes."""
    connection = op.get_bind()
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar()
    connection.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        changed = connection.execute(
            sa.text("UPDATE sqlite_master SET sql = replace(sql, :old, :new) "
                    "WHERE type = 'table' AND name = 'tasks' AND instr(sql, :old) > 0"),
            {"old": old, "new": new}).rowcount
        if changed != 1:
            raise RuntimeError("tasks: the status CHECK constraint is not the expected one")
        connection.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema = OFF")
