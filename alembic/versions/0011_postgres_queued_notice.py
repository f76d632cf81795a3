"""PostgreSQL: the tasks table NOTIFYs tasks_queued when tasks are queued

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Processes that run tasks LISTEN on tasks_queued and claim at once instead of at
their next poll. The triggers send the notice inside the transaction that
queued the tasks, so only a commit sends it. Other databases: nothing to do.

The update trigger names the status column: a later migration that changes that
column's type drops the trigger first and makes it again after.
"""
from typing import Sequence, Union

from alembic import op

revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The same text as db/dialects/postgresql_notify.py's QUEUED_NOTICE when it was written.
UPGRADE = (
    "DROP TRIGGER IF EXISTS tasks_queued_insert ON tasks",
    "DROP TRIGGER IF EXISTS tasks_queued_update ON tasks",
    """CREATE OR REPLACE FUNCTION tasks_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasks_queued', '');
    RETURN NULL;
END $$""",
    "CREATE TRIGGER tasks_queued_insert AFTER INSERT ON tasks "
    "FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_queued()",
    "CREATE TRIGGER tasks_queued_update AFTER UPDATE OF status ON tasks FOR EACH ROW "
    "WHEN (NEW.status = 'queued' AND OLD.status <> 'queued' "
    "AND NEW.run_after <= (now() AT TIME ZONE 'UTC') + interval '1 second' "
    "AND current_setting('tasks.quiet', true) IS DISTINCT FROM 'on') "
    "EXECUTE FUNCTION tasks_notify_queued()",
)
DOWNGRADE = (
    "DROP TRIGGER IF EXISTS tasks_queued_update ON tasks",
    "DROP TRIGGER IF EXISTS tasks_queued_insert ON tasks",
    "DROP FUNCTION IF EXISTS tasks_notify_queued()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for statement in DOWNGRADE:
            op.execute(statement)
