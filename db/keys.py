"""Unique tasks: an idempotency key names at most one live task at a time.

A key is live while its task is unfinished, and for `window` seconds after it
finished. One row per key (task_keys' primary key) makes this race-free on
every database: the submits that meet one key queue for its row, and each one
after the first finds the task it names.
"""
import datetime as dt

from sqlalchemy import select, update

from db.dialects import dialect_of
from db.models import FINISHED_STATES, Task, TaskKey, utcnow


class KeyReused(ValueError):
    """The key names a live task submitted with something else."""

    def __init__(self, key, task_id):
        super().__init__(f"the key {key!r} belongs to task {task_id}, submitted with another "
                         "name, arguments or options")
        self.key = key
        self.task_id = task_id


def reserve(session, key, fingerprint, window):
    """Hold key for a task this transaction is about to add (bind() names it); or, if the key
    is live, return the id of the task it names (KeyReused if fingerprints differ)."""
    now = utcnow()
    session.execute(dialect_of(session).insert_or_keep(TaskKey.__table__),
                    {"key": key, "task_id": None, "fingerprint": fingerprint, "created_at": now})
    # The row is ours now: just inserted (task_id None), or locked after a commit made it.
    row = session.execute(select(TaskKey.task_id, TaskKey.fingerprint).where(TaskKey.key == key)
                          .with_for_update()).one()
    if row.task_id is None:
        return None
    # A plain read (no lock on the task: retention deletes a task, then its key, and
    # a lock here in the other order could deadlock with it); the key row we hold keeps
    # the task from being deleted until we commit.
    holder = session.execute(select(Task.status, Task.finished_at).where(Task.id == row.task_id)
                             ).one_or_none()
    if holder is not None and (holder.status not in FINISHED_STATES
                               or holder.finished_at > now - dt.timedelta(seconds=window)):
        if row.fingerprint != fingerprint:
            raise KeyReused(key, row.task_id)
        return row.task_id
    # Its task finished longer ago than the window (or is gone): the key is free again.
    session.execute(update(TaskKey).where(TaskKey.key == key)
                    .values(task_id=None, fingerprint=fingerprint, created_at=now)
                    .execution_options(synchronize_session=False))
    return None


def bind(session, key, task_id):
    """Name the task reserve() held key for."""
    session.execute(update(TaskKey).where(TaskKey.key == key).values(task_id=task_id)
                    .execution_options(synchronize_session=False))
