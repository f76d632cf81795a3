"""Writes to an attempt a runner holds: its start, outcome, progress, lease and recovery.

Every write to one attempt is fenced by (owner, attempts): a runner that lost
its lease, or a late thread, can never overwrite what a newer attempt recorded.
The statements are built once: reusing one statement object lets SQLAlchemy
skip compiling it again for every task.
"""
import datetime as dt

from sqlalchemy import bindparam, select, update

from db import rates
from db.dialects import by_primary_key
from db.models import (FAILED, FINISHED_STATES, HELD_STATES, QUEUED, RESERVED, RUNNING, SUCCEEDED,
                       Task, utcnow)

_table = Task.__table__
_c = _table.c


def new_value(name):
    """A bound parameter for a new value of column name."""
    return bindparam(f"v_{name}", type_=_c[name].type)


def _fenced_update(statuses=(RUNNING,), **values):
    """UPDATE one attempt of a task, only while this owner still holds it in one of statuses."""
    return (
        update(_table)
        .where(
            _c.id == bindparam("task_id"),
            _c.owner == bindparam("fence_owner"),
            _c.attempts == bindparam("fence_attempt"),
            _c.status.in_(statuses) if len(statuses) > 1 else _c.status == statuses[0],
        )
        .values(**values)
    )



_SUCCEED = _fenced_update(status=SUCCEEDED, progress=100, result=new_value("result"),
                          finished_at=new_value("finished_at"), error=None, traceback=None)
_END = _fenced_update(status=new_value("status"), finished_at=new_value("finished_at"),
                      error=new_value("error"), traceback=new_value("traceback"))
# Back in the queue means not handed to any broker yet (published_at: the Celery relay).
_RETRY = _fenced_update(status=QUEUED, owner=None, run_after=new_value("run_after"),
                        error=new_value("error"), traceback=new_value("traceback"),
                        message=new_value("message"), published_at=None)
_RELEASE = _fenced_update(HELD_STATES, status=QUEUED, owner=None, attempts=_c.attempts - 1,
                          run_after=new_value("run_after"), published_at=None)
_START = _fenced_update((RESERVED,), status=RUNNING, started_at=new_value("started_at"),
                        heartbeat_at=new_value("started_at"))
_PROGRESS = _fenced_update(progress=new_value("progress"), message=new_value("message"))


def _write_fenced(session, statement, claim, owner, **values):
    """Run a fenced UPDATE; True if the attempt was still ours."""
    params = {"task_id": claim.id, "fence_owner": owner, "fence_attempt": claim.attempt}
    params.update((f"v_{name}", value) for name, value in values.items())
    # On the session's own connection and transaction, without the ORM's
    # execute pipeline: this runs once per task, inside its write transaction.
    return session.connection().execute(statement, params).rowcount == 1


STARTED, THROTTLED, GONE = "started", "throttled", "gone"


def start_task(session, claim, owner):
    """Mark a reserved attempt running from now: STARTED; GONE if it is no longer ours (cancelled
    while it waited, or its lease was taken back); THROTTLED if its rate limit has no room
    now: back in the queue till there is, the attempt not counted."""
    now = utcnow()
    if claim.rate_key is not None:
        opens = rates.opening(session, claim.rate_key, claim.rate_limit, now)
        if opens is not None:
            released = _write_fenced(session, _RELEASE, claim, owner, run_after=opens)
            return THROTTLED if released else GONE
    if not _write_fenced(session, _START, claim, owner, started_at=now):
        return GONE
    if claim.rate_key is not None:
        rates.log_start(session, claim.rate_key, claim.rate_window, now)
    return STARTED


def finish_task(session, claim, owner, status, result=None, error=None, traceback=None):
    """Record how this attempt ended; return False if the task is no longer ours."""
    assert status in FINISHED_STATES
    if status == SUCCEEDED:
        return _write_fenced(session, _SUCCEED, claim, owner, result=result,
                             finished_at=utcnow())
    return _write_fenced(session, _END, claim, owner, status=status, finished_at=utcnow(),
                         error=error, traceback=traceback)


def requeue_attempt(session, claim, owner, run_after, error, traceback=None):
    """Put this attempt back in the queue to run again at run_after."""
    message = f"attempt {claim.attempt} of {claim.max_attempts} failed; retrying"
    return _write_fenced(session, _RETRY, claim, owner, run_after=run_after, error=error,
                         traceback=traceback, message=message)


def release_task(session, claim, owner, started):
    """Give back an attempt that shutdown cut short (started) or kept from starting; it does not count.

    One that never started keeps its run_after, so its place in line; one that ran
    is due from now, so its queue wait does not count the time it ran.
    """
    run_after = utcnow() if started else claim.run_after
    return _write_fenced(session, _RELEASE, claim, owner, run_after=run_after)


def save_progress(session, claim, owner, progress, message):
    """Store a running attempt's progress."""
    return _write_fenced(session, _PROGRESS, claim, owner, progress=progress, message=message)


def heartbeat(session, owner, task_ids):
    """Refresh the lease of these reserved or running tasks of owner.

    Rows another transaction holds are skipped, not waited for: locking them all in
    id order deadlocked on MySQL with a transaction that held one of them and wanted
    another (seen with a finishing task that started its next one in its commit; a
    bulk cancel does the same). Their writer refreshes or ends their lease; a row
    whose writer rolled back is refreshed next time, well within the lease.
    """
    if not task_ids:
        return 0
    free = session.scalars(
        select(Task.id).where(Task.id.in_(task_ids), Task.owner == owner, Task.status.in_(HELD_STATES))
        .with_for_update(skip_locked=True)).all()
    if not free:
        return 0
    statement = by_primary_key(
        update(Task)
        .where(Task.id.in_(free), Task.owner == owner, Task.status.in_(HELD_STATES))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).rowcount


def cancel_requested_ids(session, task_ids):
    """Return which of these tasks have been asked to cancel."""
    if not task_ids:
        return set()
    statement = select(Task.id).where(Task.id.in_(task_ids), Task.cancel_requested.is_(True))
    return set(session.scalars(statement))


def recover_expired(session, lease_seconds, failed_ids=None):
    """Take back reserved and running tasks whose lease expired; return (requeued, failed).
    failed_ids, a list, gets the ids of the expired running tasks (those it failed among them).

    A reserved one never started: it goes back to its place in line, its claim not
    counted as an attempt. A running one is requeued, or failed if it was its last attempt.
    """
    now = utcnow()
    stale = Task.heartbeat_at < now - dt.timedelta(seconds=lease_seconds)
    # Find them with a plain read first, then update by primary key: an UPDATE
    # that scans every running row would lock rows live workers are finishing.
    # One status per read: SQLite's partial indexes need the status said alone.
    reserved = session.scalars(select(Task.id).where(Task.status == RESERVED, stale)).all()
    unstarted = session.execute(by_primary_key(
        update(Task)
        .where(Task.id.in_(reserved), Task.status == RESERVED, stale)
        .values(status=QUEUED, owner=None, attempts=Task.attempts - 1, published_at=None)
        .execution_options(synchronize_session=False)
    )).rowcount if reserved else 0
    expired = (Task.status == RUNNING, stale)
    ids = session.scalars(select(Task.id).where(*expired)).all()
    if not ids:
        return unstarted, 0
    if failed_ids is not None:
        failed_ids.extend(ids)
    requeued = unstarted + session.execute(by_primary_key(
        update(Task)
        .where(Task.id.in_(ids), *expired, Task.attempts < Task.max_attempts)
        .values(status=QUEUED, owner=None, run_after=now, message="worker lost; requeued",
                published_at=None)
        .execution_options(synchronize_session=False)
    )).rowcount
    failed = session.execute(by_primary_key(
        update(Task)
        .where(Task.id.in_(ids), *expired, Task.attempts >= Task.max_attempts)
        .values(status=FAILED, error="worker lost", finished_at=now)
        .execution_options(synchronize_session=False)
    )).rowcount
    return requeued, failed
