"""Concurrency limits: at most `concurrency` tasks with one limit key run at once, across processes.

A limited task carries its key and its limit (tasks.limit_key, tasks.concurrency).
The plain claim leaves such tasks alone; claim_limited takes, per key, the first
due ones up to the key's free slots, counted from its reserved and running rows. Claimers of
one key take turns: each first writes the key's task_limits row, which locks it
on MySQL and takes the write lock on SQLite, and only then counts. Nothing but
the reserved and running rows holds a slot, so a slot held by a process that died frees when
lease recovery requeues its task.
"""
import time

from sqlalchemy import bindparam, delete, func, select, update

from db.dialect import dialect_of
from db.models import HELD_STATES, QUEUED, RESERVED, UNFINISHED_STATES, Task, TaskLimit, utcnow
from db.tasks import _CLAIM, _CLAIM_COLUMNS, _PAUSED, Claim
from db import tasks

_table = Task.__table__
_c = _table.c
_running = _table.alias("running")

# Slots taken per limit key: its reserved and running tasks (ix_tasks_limit: status, limit_key).
RUNNING_PER_KEY = (select(_running.c.limit_key, func.count().label("running"))
                   .where(_running.c.status.in_(HELD_STATES), _running.c.limit_key.is_not(None))
                   .group_by(_running.c.limit_key))


def _due_limited(served, given):
    """WHERE terms: due queued limited rows (of the :queues list if served; of :ids if given)."""
    where = [_c.status == QUEUED, _c.limit_key.is_not(None),
             _c.run_after <= bindparam("now", type_=_c.run_after.type),
             _c.queue.not_in(_PAUSED.scalar_subquery())]
    if served:
        where.append(_c.queue.in_(bindparam("queues", expanding=True)))
    if given:
        where.append(_c.id.in_(bindparam("ids", expanding=True)))
    return where


def _statements(served, given):
    """(keys of due limited rows, ids that fit their key's free slots in claim order)."""
    where = _due_limited(served, given)
    keys = select(_c.limit_key).where(*where).distinct()
    running = RUNNING_PER_KEY.subquery()
    ranked = (
        # A key's limit is the lowest among its waiting tasks (a deploy may have changed it).
        select(_c.id, _c.priority, _c.run_after,
               func.min(_c.concurrency).over(partition_by=_c.limit_key).label("concurrency"),
               func.coalesce(running.c.running, 0).label("running"),
               func.row_number().over(partition_by=_c.limit_key,
                                      order_by=(_c.priority.desc(), _c.run_after, _c.id))
               .label("place"))
        .select_from(_table.outerjoin(running, running.c.limit_key == _c.limit_key))
        .where(*where, _c.limit_key.in_(bindparam("keys", expanding=True)))
        .subquery()
    )
    fitting = (select(ranked.c.id)
               .where(ranked.c.running + ranked.c.place <= ranked.c.concurrency)
               .order_by(ranked.c.priority.desc(), ranked.c.run_after, ranked.c.id)
               .limit(bindparam("limit")))
    return keys, fitting


def fitting_ids(now):
    """The ids of due queued limited tasks that fit their key's free slots, counting the
    ones ahead of them in claim order as taken (the Celery relay publishes only those)."""
    running = RUNNING_PER_KEY.subquery()
    due = [_c.status == QUEUED, _c.limit_key.is_not(None), _c.run_after <= now,
           _c.queue.not_in(_PAUSED.scalar_subquery())]
    ranked = (
        select(_c.id, func.min(_c.concurrency).over(partition_by=_c.limit_key).label("concurrency"),
               func.coalesce(running.c.running, 0).label("running"),
               func.row_number().over(partition_by=_c.limit_key,
                                      order_by=(_c.priority.desc(), _c.run_after, _c.id))
               .label("place"))
        .select_from(_table.outerjoin(running, running.c.limit_key == _c.limit_key))
        .where(*due)
        .subquery()
    )
    return select(ranked.c.id).where(ranked.c.running + ranked.c.place <= ranked.c.concurrency)


_STATEMENTS = {(served, given): _statements(served, given)
               for served in (False, True) for given in (False, True)}
_CLAIMED = (select(*_CLAIM_COLUMNS)
            .where(_c.id.in_(bindparam("ids", expanding=True)), _c.owner == bindparam("v_owner"),
                   _c.status == RESERVED, _c.heartbeat_at == bindparam("v_now", type_=_c.heartbeat_at.type))
            .order_by(_c.priority.desc(), _c.run_after, _c.id))
_UNCLAIM = (update(_table)
            .where(_c.id.in_(bindparam("ids", expanding=True)), _c.owner == bindparam("v_owner"),
                   _c.status == RESERVED)
            .values(status=QUEUED, owner=None, attempts=_c.attempts - 1))


def claim_limited(session, owner, limit, queues=None, task_ids=None):
    """Reserve up to limit due queued limited tasks for owner, none beyond its key's
    concurrency; return their Claims in claim order. queues: only those (all if None);
    task_ids: only those (a broker's deliveries)."""
    now = utcnow()
    keys_of, fitting = _STATEMENTS[queues is not None, task_ids is not None]
    params = {"now": now}
    if queues is not None:
        params["queues"] = list(queues)
    if task_ids is not None:
        params["ids"] = list(task_ids)
    keys = sorted(session.scalars(keys_of, params))
    if not keys:
        return []
    # Take the keys' turns, in one order everywhere so two claimers cannot deadlock.
    session.execute(dialect_of(session).insert_or_keep(TaskLimit.__table__),
                    [{"limit_key": key, "created_at": now} for key in keys])
    ids = list(session.scalars(fitting, {**params, "keys": keys, "limit": limit}))
    if not ids:
        return []
    session.execute(_CLAIM, {"ids": ids, "v_owner": owner, "v_now": now})
    return [Claim(*row) for row in session.execute(_CLAIMED, {"ids": ids, "v_owner": owner,
                                                              "v_now": now})]


def claim_tasks(session, owner, limit, queues=None):
    """tasks.claim_tasks with limited tasks among them: the first limit of both in claim order."""
    plain = tasks.claim_tasks(session, owner, limit, queues)
    limited = claim_limited(session, owner, limit, queues)
    if not limited:
        return plain
    claims = sorted(plain + limited, key=Claim.order)
    # Those past the limit go back, unseen: this transaction has not committed.
    extra = [claim.id for claim in claims[limit:]]
    if extra:
        session.execute(_UNCLAIM, {"ids": extra, "v_owner": owner})
    return claims[:limit]


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
    in_use = set(session.scalars(  # ix_tasks_limit: status, limit_key
        select(_c.limit_key).where(_c.status.in_(UNFINISHED_STATES), _c.limit_key.in_(old))
        .distinct())) if old else set()
    idle = [key for key in old if key not in in_use]
    if idle:
        session.execute(delete(TaskLimit).where(TaskLimit.limit_key.in_(idle))
                        .execution_options(synchronize_session=False))
    return len(idle), (rows[-1].limit_key if len(rows) == batch else None)


_ANY_WAITING = select(_c.id).where(_c.status == QUEUED, _c.limit_key.is_not(None)).limit(1)


class Claimer:
    """A process's claims: with the limited step while it declares a limited task, or while
    any limited task waits (looked up at most every `every` seconds), so that rows queued
    under a declaration a deploy has since removed are still claimed."""

    def __init__(self, declares_limits, every=1.0):
        self.declares_limits = declares_limits  # () -> bool
        self.every = every
        self._looked_at = -float("inf")
        self._waiting = False

    def claim_tasks(self, session, owner, limit, queues=None):
        """claim_tasks() above if limited tasks may wait, else the plain tasks.claim_tasks()."""
        if self.declares_limits() or self._some_waiting(session):
            return claim_tasks(session, owner, limit, queues)
        return tasks.claim_tasks(session, owner, limit, queues)

    def _some_waiting(self, session):
        now = time.monotonic()
        if now - self._looked_at >= self.every:
            self._looked_at = now
            self._waiting = session.execute(_ANY_WAITING).first() is not None
        return self._waiting
