"""recurring tasks: task_schedules, the newest slot each schedule has taken

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Every process that runs tasks may run the scheduler; a slot is taken by a
conditional UPDATE that moves last_slot forward, so each slot runs once.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table(
        'task_schedules',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('last_slot', Timestamp, nullable=False),
        sa.Column('last_task_id', sa.Integer(), nullable=True),
        sa.Column('changed_at', Timestamp, nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_task_schedules')),
    )


def downgrade() -> None:
    op.drop_table('task_schedules')
