"""Data functions for the task queue: submit, list, cancel. Each takes a session and never
ends its transaction; claims are db.claims', writes to a running attempt db.attempt_writes's."""
from sqlalchemy import bindparam, case, func, insert, select, update

from db import fairness, stats
from db.dialects import by_primary_key, dialect_of
from db.models import (
    CANCELLED,
    DEFAULT_QUEUE,
    FINISHED_STATES,
    QUEUED,
    RESERVED,
    RUNNING,
    UNFINISHED_STATES,
    Task,
    utcnow,
)


def insert_task(session, name, args, run_after=None, max_attempts=3, time_limit=None,
                retry_of=None, priority=0, queue=DEFAULT_QUEUE, limit_key=None, concurrency=None,
                workflow_node=None, rate_key=None, rate_limit=None, rate_window=None, fair_key=None):
    """Insert a queued task; return it as a Task that is not attached to the session.

    A Core INSERT of a prebuilt statement: submitting is the hot path of the API.
    """
    values = _queued(name, args, run_after, max_attempts, time_limit, retry_of, priority, queue,
                     limit_key, concurrency, workflow_node, rate_key, rate_limit, rate_window, fair_key)
    if fair_key is not None:
        fairness.give_places(session, [values], values["created_at"])
    task = Task(**values)  # made before the INSERT: on SQLite that holds the write turn till commit
    # On the session's connection, past the ORM's execute pipeline: a plain Core INSERT.
    task.id = session.connection().execute(_INSERT, values).inserted_primary_key[0]
    return task


def insert_tasks(session, submits):
    """Insert several queued tasks in one statement; return them as detached Tasks, in order.

    submits: dicts of insert_task's keyword arguments. The database's Dialect
    inserts them in as few round trips as it can.
    """
    many = [_queued(**submit) for submit in submits]
    if any(values["fair_key"] is not None for values in many):
        fairness.give_places(session, many, many[0]["created_at"])
    made = [Task(**values) for values in many]
    ids = dialect_of(session).insert_returning_ids(session.connection(), _table, many)
    for task, task_id in zip(made, ids, strict=True):
        task.id = task_id
    return made


def _queued(name, args, run_after=None, max_attempts=3, time_limit=None, retry_of=None,
            priority=0, queue=DEFAULT_QUEUE, limit_key=None, concurrency=None, workflow_node=None,
            rate_key=None, rate_limit=None, rate_window=None, fair_key=None):
    """The column values of a newly queued task (its fair_place is db.fairness's to give)."""
    now = utcnow()
    return dict(name=name, args=args, status=QUEUED, progress=0, attempts=0,
                max_attempts=max_attempts, time_limit=time_limit, cancel_requested=False,
                run_after=run_after or now, created_at=now, retry_of=retry_of, priority=priority,
                queue=queue, limit_key=limit_key, concurrency=concurrency, workflow_node=workflow_node,
                rate_key=rate_key, rate_limit=rate_limit, rate_window=rate_window, fair_key=fair_key,
                fair_place=None)


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


# The hot statements are built once: reusing one statement object lets
# SQLAlchemy skip compiling it again for every task.
_table = Task.__table__
_c = _table.c
_INSERT = insert(_table)


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
