"""workflows: chains, groups and chords of tasks, each step settled in the commit that ends it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

workflows holds a workflow's status; workflow_nodes its tree (a group's pending
count is moved by the commit that ends each member); tasks.workflow_node names
the step a task runs.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'workflows',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('cancel_on_failure', sa.Boolean(), nullable=False),
        sa.Column('swept', sa.Boolean(), nullable=False),
        sa.Column('failed_task', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', Timestamp, nullable=False),
        sa.Column('finished_at', Timestamp, nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f('ck_workflows_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_workflows')),
    )
    op.create_index(op.f('ix_workflows_status'), 'workflows', ['status'])
    op.create_table(
        'workflow_nodes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('workflow_id', sa.Integer(), nullable=False),
        sa.Column('parent_id', sa.Integer(), nullable=True),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('pending', sa.Integer(), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('waiting', 'active', 'succeeded', 'failed', 'cancelled')",
                           name=op.f('ck_workflow_nodes_status')),
        sa.ForeignKeyConstraint(['workflow_id'], ['workflows.id'], ondelete='CASCADE',
                                name=op.f('fk_workflow_nodes_workflow_id_workflows')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_nodes')),
    )
    op.create_index(op.f('ix_workflow_nodes_workflow_id'), 'workflow_nodes', ['workflow_id'])
    op.create_index(op.f('ix_workflow_nodes_parent_id'), 'workflow_nodes', ['parent_id'])
    op.create_index(op.f('ix_workflow_nodes_task_id'), 'workflow_nodes', ['task_id'])
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.add_column(sa.Column('workflow_node', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch_op:
        batch_op.drop_column('workflow_node')
    op.drop_table('workflow_nodes')
    op.drop_table('workflows')
