"""Limits' bookkeeping: the task_limits rows that make a key's claimers (or starters) take turns.

A limited task carries its key and its limit (tasks.limit_key, tasks.concurrency);
db.claims counts a key's reserved and running rows to see what fits. The key's
row only orders its claimers, so rows of keys nobody uses are deleted from time
to time.
"""
from sqlalchemy import delete, select

from db.models import UNFINISHED_STATES, Task, TaskLimit, utcnow

_c = Task.__table__.c


def forget_idle_keys(session, after, older_than, batch=500, now=None):
    """Delete those of the next batch task_limits rows past key after that are older than
    older_than and have no unfinished task; return (how many, where to go on or None).

    A row only makes its key's claimers take turns (the reserved and running rows are the count):
    one deleted just before a claim needs it is made again by that claim.
    """
    now = now or utcnow()
    query = select(TaskLimit.limit_key, TaskLimit.created_at).order_by(TaskLimit.limit_key).limit(batch)
    if after is not None:
        query = query.where(TaskLimit.limit_key > after)
    rows = session.execute(query).all()
    old = [row.limit_key for row in rows if row.created_at < now - older_than]
    in_use = set()
    for key in (_c.limit_key, _c.rate_key) if old else ():  # a rate key's row is its starts' turn
        in_use.update(session.scalars(select(key).where(_c.status.in_(UNFINISHED_STATES), key.in_(old)).distinct()))
    idle = [key for key in old if key not in in_use]
    if idle:
        session.execute(delete(TaskLimit).where(TaskLimit.limit_key.in_(idle))
                        .execution_options(synchronize_session=False))
    return len(idle), (rows[-1].limit_key if len(rows) == batch else None)
