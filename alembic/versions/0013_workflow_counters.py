"""workflow_counters: a group's count of unfinished members, in shards

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

One counter row per group made every member's ending commit take turns on that
row; a member now counts on the shard of its position, and only the commit that
empties a shard takes the group's row.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'workflow_counters',
        sa.Column('node_id', sa.Integer(), nullable=False),
        sa.Column('shard', sa.Integer(), nullable=False),
        sa.Column('workflow_id', sa.Integer(), nullable=False),
        sa.Column('pending', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('node_id', 'shard', name=op.f('pk_workflow_counters')),
    )
    op.create_index(op.f('ix_workflow_counters_workflow_id'), 'workflow_counters', ['workflow_id'])
    with op.batch_alter_table('workflow_nodes') as batch_op:
        batch_op.add_column(sa.Column('shards', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow_nodes') as batch_op:
        batch_op.drop_column('shards')
    op.drop_table('workflow_counters')
