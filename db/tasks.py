"""Data functions for the task queue: submit, list, claim, cancel. Each takes a session and
never ends its transaction; writes to a running attempt are db.fenced's."""
import collections
import dataclasses
import datetime as dt

from sqlalchemy import bindparam, case, func, insert, select, update

from db import stats
from db.dialect import by_primary_key, dialect_of
from db.fenced import new_value
from db.models import (
    CANCELLED,
    DEFAULT_QUEUE,
    FINISHED_STATES,
    QUEUED,
    RESERVED,
    RUNNING,
    UNFINISHED_STATES,
    Task,
    TaskQueue,
    utcnow,
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a worker needs to run one attempt of a task: plain values, no ORM object."""

    id: int
    name: str
    args: dict
    attempt: int
    max_attempts: int
    time_limit: float | None
    cancel_requested: bool
    run_after: dt.datetime  # when it became due: its wait in the queue ends at its start
    priority: int = 0

    def order(self):
        """Its place in claim order: highest priority, then earliest due, then oldest."""
        return -self.priority, self.run_after, self.id


def insert_task(session, name, args, run_after=None, max_attempts=3, time_limit=None,
                retry_of=None, priority=0, queue=DEFAULT_QUEUE, limit_key=None, concurrency=None):
    """Insert a queued task; return it as a Task that is not attached to the session.

    A Core INSERT of a prebuilt statement: submitting is the hot path of the API.
    """
    values = _queued(name, args, run_after, max_attempts, time_limit, retry_of, priority, queue,
                     limit_key, concurrency)
    task = Task(**values)  # made before the INSERT: on SQLite that holds the write turn till commit
    # On the session's connection, past the ORM's execute pipeline: a plain Core INSERT.
    task.id = session.connection().execute(_INSERT, values).inserted_primary_key[0]
    return task


def insert_tasks(session, submits):
    """Insert several queued tasks in one statement; return them as detached Tasks, in order.

    submits: dicts of insert_task's keyword arguments. On MariaDB one multi-row
    INSERT ... RETURNING, a round trip for the lot; SQLAlchemy runs it a row at a
    time on SQLite (no column it could order the returned ids by), in-process.
    """
    if not session.get_bind().dialect.insert_executemany_returning_sort_by_parameter_order:
        return [insert_task(session, **submit) for submit in submits]  # MySQL 8: no RETURNING
    many = [_queued(**submit) for submit in submits]
    made = [Task(**values) for values in many]
    ids = dialect_of(session).insert_returning_ids(session.connection(), _table, many)
    for task, task_id in zip(made, ids, strict=True):
        task.id = task_id
    return made


def _queued(name, args, run_after=None, max_attempts=3, time_limit=None, retry_of=None,
            priority=0, queue=DEFAULT_QUEUE, limit_key=None, concurrency=None):
    """The column values of a newly queued task."""
    now = utcnow()
    return dict(name=name, args=args, status=QUEUED, progress=0, attempts=0,
                max_attempts=max_attempts, time_limit=time_limit, cancel_requested=False,
                run_after=run_after or now, created_at=now, retry_of=retry_of, priority=priority,
                queue=queue, limit_key=limit_key, concurrency=concurrency)


def get_task(session, task_id):
    """Return the task with this id, or None."""
    return session.get(Task, task_id)


def _matching(status=None, name=None):
    """The WHERE terms of a list filter."""
    conditions = []
    if status:
        conditions.append(Task.status == status)
    if name:
        conditions.append(Task.name == name)
    return conditions


def list_tasks(session, limit, offset, status=None, name=None):
    """Return (one page of tasks newest first, total count), optionally filtered."""
    page = session.scalars(
        select(Task).where(*_matching(status, name)).order_by(Task.id.desc())
        .limit(limit).offset(offset)
    ).all()
    return page, stats.count_tasks(session, status, name)


def count_queued(session):
    """Return how many tasks wait to run."""
    return session.scalar(select(func.count()).select_from(Task).where(Task.status == QUEUED))


def count_unfinished(session):
    """Return how many tasks are queued, reserved or running."""
    return session.scalar(
        select(func.count()).select_from(Task).where(Task.status.in_(UNFINISHED_STATES))
    )


def claim_tasks(session, owner, limit, queues=None):
    """Reserve up to limit due queued tasks for owner; return their Claims.

    A reserved task waits for one of owner's workers; it is running only once
    fenced.start_task marks it so.

    Highest priority first, then the earliest due, then the oldest; only from
    queues (all if None) and never from a paused one; never a task under a
    concurrency limit (db.limits.claim_tasks takes those too). The UPDATE only takes
    rows that are still queued, so two runners racing for the same row cannot
    both win; SKIP LOCKED (MySQL) keeps them off each other's rows in the first place.
    """
    now = utcnow()
    claim = _CLAIMS[queues is not None]
    params = {"now": now, "limit": limit}
    if queues is not None:
        params["queues"] = list(queues)
    connection = session.connection()  # Core statements: past the ORM's bulk-update machinery
    if dialect_of(session).claim_returning:
        # One statement (SQLite, PostgreSQL): the write lock is held the least.
        rows = connection.execute(claim.returning, {**params, "v_owner": owner, "v_now": now}).all()
        return sorted((Claim(*row) for row in rows), key=Claim.order)  # RETURNING has no order
    # Elsewhere (MySQL/MariaDB): read the due rows and lock them, then mark them.
    rows = connection.execute(claim.due_rows, params).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    taken = connection.execute(_CLAIM, {"ids": ids, "v_owner": owner, "v_now": now}).rowcount
    if taken != len(ids):  # without row locks a row can change in between: ask which we got
        rows = connection.execute(_CLAIMED, {"ids": ids, "v_owner": owner}).all()
        return [Claim(*row) for row in rows]
    return [Claim(*row[:3], row.attempts + 1, *row[4:]) for row in rows]


def one_writer(session):
    """True when the database lets one transaction write at a time (SQLite)."""
    return dialect_of(session).one_writer


# The hot statements are built once: reusing one statement object lets
# SQLAlchemy skip compiling it again for every task.
_table = Task.__table__
_c = _table.c


_INSERT = insert(_table)
_CLAIM_COLUMNS = (_c.id, _c.name, _c.args, _c.attempts, _c.max_attempts, _c.time_limit,
                  _c.cancel_requested, _c.run_after, _c.priority)  # in the order of Claim's fields
_PAUSED = select(TaskQueue.name).where(TaskQueue.paused.is_(True))


def _due(served):
    """The claim's read of due rows, in claim order; served: only the :queues list."""
    where = [_c.status == QUEUED, _c.run_after <= bindparam("now", type_=_c.run_after.type),
             _c.queue.not_in(_PAUSED.scalar_subquery()),
             _c.limit_key.is_(None)]  # limited tasks: db.limits claims them
    if served:
        where.append(_c.queue.in_(bindparam("queues", expanding=True)))
    return (select(_c.id).where(*where)
            .order_by(_c.priority.desc(), _c.run_after, _c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True))


# The lease starts at the claim; started_at waits for a worker (fenced.start_task).
_CLAIM_VALUES = dict(status=RESERVED, owner=new_value("owner"), attempts=_c.attempts + 1,
                     started_at=None, heartbeat_at=bindparam("v_now", type_=_c.heartbeat_at.type))
_CLAIM = by_primary_key(
    update(_table)
    .where(_c.id.in_(bindparam("ids", expanding=True)), _c.status == QUEUED)
    .values(**_CLAIM_VALUES)
)
_CLAIMED = (
    select(*_CLAIM_COLUMNS)
    .where(_c.id.in_(bindparam("ids", expanding=True)), _c.owner == new_value("owner"),
           _c.status == RESERVED)
    .order_by(_c.priority.desc(), _c.run_after, _c.id)
)
ClaimStatements = collections.namedtuple("ClaimStatements", "due_rows returning")
_CLAIMS = {  # served (a queues list given) -> its statements, built once
    served: ClaimStatements(
        due_rows=_due(served).with_only_columns(*_CLAIM_COLUMNS),
        returning=(update(_table)
                   .where(_c.id.in_(_due(served).scalar_subquery()), _c.status == QUEUED)
                   .values(**_CLAIM_VALUES)
                   .returning(*_CLAIM_COLUMNS)),
    )
    for served in (False, True)
}


CANCEL_DONE, CANCEL_REQUESTED, CANCEL_TOO_LATE = "cancelled", "requested", "too late"


def request_cancel(session, task_id):
    """Cancel a queued or reserved task or flag a running one.

    Returns CANCEL_DONE, CANCEL_REQUESTED (the running task will see it),
    CANCEL_TOO_LATE (already finished) or None for an unknown id.
    """
    for _ in range(5):
        if session.execute(CANCEL_WAITING, {"ids": [task_id], "now": utcnow()}).rowcount:
            return CANCEL_DONE
        flagged = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status == RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        ).rowcount
        if flagged:
            return CANCEL_REQUESTED
        status = session.scalar(select(Task.status).where(Task.id == task_id))
        if status is None:
            return None
        if status in FINISHED_STATES:
            return CANCEL_TOO_LATE
        # It moved between queued, reserved and running while we looked; look again.
    return CANCEL_TOO_LATE


# Cancel tasks that have not started: queued, or reserved (its process's worker then finds
# it cancelled and skips it; the claim that reserved it was no attempt).
CANCEL_WAITING = by_primary_key(
    update(_table)
    .where(_c.id.in_(bindparam("ids", expanding=True)), _c.status.in_((QUEUED, RESERVED)))
    # attempts first: MySQL evaluates SET left to right, and the CASE must see the old status.
    .ordered_values((_c.attempts, case((_c.status == RESERVED, _c.attempts - 1), else_=_c.attempts)),
                    (_c.status, CANCELLED), (_c.cancel_requested, True),
                    (_c.finished_at, bindparam("now", type_=_c.finished_at.type)))
)
