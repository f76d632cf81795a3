"""fair share: tasks.fair_key and tasks.fair_place, the fair claim's indexes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

A fair task waits in turn with the other keys of its priority: fair_place is
its priority's band, then its turn. The plain claim leaves fair and limited
tasks to their own claims: the claim index now puts them apart (fair_place and
limit_key before the claim order), so a backlog of them is never read past. On
PostgreSQL, whose planner does not read an index in order past IS NULL terms,
ix_tasks_plain holds the queued plain rows in claim order.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ExactKey = sa.String(length=200).with_variant(mysql.VARCHAR(200, collation='utf8mb4_bin'), 'mysql', 'mariadb')
CLAIM = ['status', sa.text('priority DESC'), 'run_after', 'id', 'name', 'queue', 'limit_key']
CLAIM_APART = ['status', 'fair_place', 'limit_key', sa.text('priority DESC'), 'run_after', 'id', 'name', 'queue']


def create_index(name, columns, where):
    """A tasks index, partial (WHERE where) where the database has partial indexes."""
    dialect = op.get_bind().dialect.name
    partial = {f'{dialect}_where': sa.text(where)} if dialect in ('sqlite', 'postgresql') else {}
    op.create_index(name, 'tasks', columns, **partial)


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('fair_key', ExactKey, nullable=True))
        batch_op.add_column(sa.Column('fair_place', sa.BigInteger(), nullable=True))
    op.drop_index('ix_tasks_claim', table_name='tasks')
    create_index('ix_tasks_claim', CLAIM_APART, "status = 'queued'")
    if op.get_bind().dialect.name == 'postgresql':
        create_index('ix_tasks_plain', [sa.text('priority DESC'), 'run_after', 'id', 'queue'],
                     "status = 'queued' AND limit_key IS NULL AND fair_place IS NULL")
    create_index('ix_tasks_fair', ['status', 'fair_place', 'id', 'run_after', 'queue'], "fair_place IS NOT NULL")
    create_index('ix_tasks_fair_key', ['status', 'fair_key', 'fair_place'], "fair_key IS NOT NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_tasks_plain', table_name='tasks')
    op.drop_index('ix_tasks_fair_key', table_name='tasks')
    op.drop_index('ix_tasks_fair', table_name='tasks')
    op.drop_index('ix_tasks_claim', table_name='tasks')
    create_index('ix_tasks_claim', CLAIM, "status = 'queued'")
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('fair_place')
        batch_op.drop_column('fair_key')
