"""priorities and named queues: tasks.priority and tasks.queue, task_queues (paused), claim index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

Claims now take the highest priority first, then the earliest due, then the
oldest: the claim index reads them in that order (priority descending).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
OLD, NEW = 'ix_tasks_status_run_after', 'ix_tasks_claim'


def create_claim_index(name, columns):
    dialect = op.get_bind().dialect.name
    where = {f'{dialect}_where': sa.text("status = 'queued'")} if dialect in ('sqlite', 'postgresql') else {}
    op.create_index(name, 'tasks', columns, **where)


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('queue', sa.String(length=100), nullable=False,
                                      server_default='default'))
    op.drop_index(OLD, table_name='tasks')
    create_claim_index(NEW, ['status', sa.text('priority DESC'), 'run_after', 'id', 'name', 'queue'])
    op.create_table(
        'task_queues',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('paused', sa.Boolean(), nullable=False),
        sa.Column('changed_at', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_task_queues')),
    )


def downgrade() -> None:
    op.drop_table('task_queues')
    op.drop_index(NEW, table_name='tasks')
    create_claim_index(OLD, ['status', 'run_after', 'id', 'name'])
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('queue')
        batch_op.drop_column('priority')
