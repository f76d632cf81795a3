"""operations: runner records, rolled-up counts, retry links, finish-time index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

The roll-up starts at the minute of the upgrade, with the finished tasks
already in the table counted once here.
"""
import datetime as dt
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
PARTIAL_STATUS_INDEXES = ('running', 'failed', 'cancelled')


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('retry_of', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('retried_by', sa.Integer(), nullable=True))
    op.create_index('ix_tasks_finished_at', 'tasks', ['finished_at'])
    if op.get_bind().dialect.name in ('sqlite', 'postgresql'):
        for status in PARTIAL_STATUS_INDEXES:
            op.create_index(f'ix_tasks_{status}', 'tasks', ['id'],
                            sqlite_where=sa.text(f"status = '{status}'"),
                            postgresql_where=sa.text(f"status = '{status}'"))
    op.create_table(
        'task_totals',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', 'status', name=op.f('pk_task_totals')),
    )
    op.create_table(
        'task_minutes',
        sa.Column('minute', Timestamp, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('minute', 'status', name=op.f('pk_task_minutes')),
    )
    rollup = op.create_table(
        'task_rollup',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('rolled_until', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_task_rollup')),
    )
    op.create_table(
        'runners',
        sa.Column('owner', sa.String(length=100), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('workers', sa.Integer(), nullable=False),
        sa.Column('busy', sa.Integer(), nullable=False),
        sa.Column('started_at', Timestamp, nullable=False),
        sa.Column('heartbeat_at', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('owner', name=op.f('pk_runners')),
    )
    start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, second=0, microsecond=0)
    op.bulk_insert(rollup, [{'id': 1, 'rolled_until': start}])
    op.execute(sa.text(
        "INSERT INTO task_totals (name, status, count) SELECT name, status, COUNT(*) FROM tasks "
        "WHERE finished_at < :start AND status IN ('succeeded', 'failed', 'cancelled') "
        "GROUP BY name, status").bindparams(sa.bindparam('start', start, type_=Timestamp)))


def downgrade() -> None:
    op.drop_table('runners')
    op.drop_table('task_rollup')
    op.drop_table('task_minutes')
    op.drop_table('task_totals')
    if op.get_bind().dialect.name in ('sqlite', 'postgresql'):
        for status in PARTIAL_STATUS_INDEXES:
            op.drop_index(f'ix_tasks_{status}', table_name='tasks')
    op.drop_index('ix_tasks_finished_at', table_name='tasks')
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('retried_by')
        batch_op.drop_column('retry_of')
