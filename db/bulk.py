"""Data functions for an operator's bulk actions: retry or cancel every task a list filter matches.

Each takes a session and never ends its transaction (service.runner.actions
commits in chunks).
"""
import collections

from sqlalchemy import func, select, update

from db.dialects import by_primary_key
from db.models import CANCELLED, FAILED, QUEUED, RESERVED, RUNNING, Task, utcnow
from db.tasks import CANCEL_WAITING, _matching

RETRYABLE = (FAILED, CANCELLED)


def _retryable(status=None, name=None):
    """One WHERE per status (SQLite's partial indexes need the status said alone) for retry candidates."""
    for each in [status] if status else RETRYABLE:
        yield (Task.status == each, Task.retried_by.is_(None), *_matching(name=name))


def _cancellable(status=None, name=None):
    """The same for cancel candidates: waiting tasks, and running ones not yet asked to stop."""
    for each in [status] if status else (QUEUED, RESERVED, RUNNING):
        asked = (Task.cancel_requested.is_(False),) if each == RUNNING else ()
        yield (Task.status == each, *asked, *_matching(name=name))


def _ids(session, filters, limit):
    ids = []
    for where in filters:
        ids += session.scalars(select(Task.id).where(*where).order_by(Task.id).limit(limit)).all()
    return sorted(ids)[:limit]


def _count(session, filters):
    return sum(session.scalar(select(func.count()).select_from(Task).where(*where))
               for where in filters)


def retryable_ids(session, status=None, name=None, limit=None):
    """Ids of failed or cancelled tasks not retried yet that match a list filter, oldest first."""
    return _ids(session, _retryable(status, name), limit)


def count_retryable(session, status=None, name=None):
    """How many failed or cancelled tasks matching a list filter were not retried yet."""
    return _count(session, _retryable(status, name))


def claim_retry(session, task_id):
    """Mark a failed or cancelled task as being retried; False if it was retried already (or is not finished).

    The caller inserts the retry and records its id with set_retry() in the
    same transaction, which this UPDATE has made the only one to do so.
    """
    return session.execute(
        update(Task)
        .where(Task.id == task_id, Task.status.in_(RETRYABLE), Task.retried_by.is_(None))
        .values(retried_by=0)
        .execution_options(synchronize_session=False)
    ).rowcount == 1


def set_retry(session, task_id, retry_id):
    """Point a task claimed by claim_retry() at its retry."""
    session.execute(update(Task).where(Task.id == task_id).values(retried_by=retry_id)
                    .execution_options(synchronize_session=False))


def cancellable_ids(session, status=None, name=None, limit=None):
    """Ids of queued and reserved tasks, and running ones not yet asked to stop, that match a list filter."""
    return _ids(session, _cancellable(status, name), limit)


def count_cancellable(session, status=None, name=None):
    """How many tasks a cancel of this list filter would reach."""
    return _count(session, _cancellable(status, name))


def cancel_ids(session, ids):
    """Cancel the queued and reserved ones among ids and ask the running ones to stop.

    Returns ({name: tasks cancelled}, tasks asked to stop).
    """
    if not ids:
        return collections.Counter(), 0
    waiting = dict(session.execute(
        select(Task.id, Task.name).where(Task.id.in_(ids), Task.status.in_((QUEUED, RESERVED)))).all())
    changed = session.execute(CANCEL_WAITING, {"ids": list(waiting), "now": utcnow()}).rowcount if waiting else 0
    cancelled = collections.Counter(waiting.values())
    if changed != len(waiting):  # some started in between: count those that ended cancelled
        cancelled = collections.Counter(session.scalars(
            select(Task.name).where(Task.id.in_(list(waiting)), Task.status == CANCELLED)))
    asked = session.execute(by_primary_key(
        update(Task).where(Task.id.in_(ids), Task.status == RUNNING,
                           Task.cancel_requested.is_(False))
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False))).rowcount
    return cancelled, asked
