"""Named queues: which are paused, and how many tasks wait, are reserved or run in each.

A queue exists while it is configured or declared by a task (the caller passes
those names), holds unfinished tasks, or has a record (it was paused or resumed).
"""
import collections
import re

from sqlalchemy import delete, func, select, update

from db.models import QUEUED, RESERVED, RUNNING, UNFINISHED_STATES, Task, TaskQueue, utcnow

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")  # whole name: fullmatch (a final newline is not a match)


def check_queue_name(name):
    """Raise ValueError unless name can be a queue (letters, digits, _ . -; at most 100)."""
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ValueError(f"a queue name is 1-100 letters, digits, '_', '.' or '-', got {name!r}")
    return name


def set_paused(session, name, paused):
    """Pause or resume a queue (claims skip a paused one; its tasks stay queued)."""
    changed = session.execute(
        update(TaskQueue).where(TaskQueue.name == name).values(paused=paused, changed_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if not changed:
        session.add(TaskQueue(name=name, paused=paused, changed_at=utcnow()))
        session.flush()


def paused_queues(session):
    """The names of the queues that are paused."""
    return set(session.scalars(select(TaskQueue.name).where(TaskQueue.paused.is_(True))))


def _unfinished_per_queue(session):
    counts = collections.Counter()
    for status in UNFINISHED_STATES:  # one status per query: SQLite's partial indexes need it said so
        counts.update({(queue, status): n for queue, n in session.execute(
            select(Task.queue, func.count()).where(Task.status == status).group_by(Task.queue))})
    return counts


def list_queues(session, known=()):
    """Every queue that exists (known: configured or declared) as dicts, by name."""
    states = {row.name: row for row in session.scalars(select(TaskQueue))}
    counts = _unfinished_per_queue(session)
    names = sorted(set(known) | set(states) | {queue for queue, _ in counts})
    return [{"name": name, "paused": bool(states[name].paused) if name in states else False,
             "changed_at": states[name].changed_at if name in states else None,
             "queued": counts[(name, QUEUED)], "reserved": counts[(name, RESERVED)],
             "running": counts[(name, RUNNING)]} for name in names]


def queue_exists(session, name, known=()):
    """True when name is known (configured or declared), has a record or holds unfinished tasks."""
    if name in known or session.get(TaskQueue, name) is not None:
        return True
    return session.scalar(select(Task.id).where(Task.queue == name, Task.status.in_(UNFINISHED_STATES))
                          .limit(1)) is not None


REMOVED, NO_RECORD, IN_USE = "removed", "no record", "in use"


def remove_queue(session, name):
    """Delete the record of a queue that holds no unfinished task: REMOVED, NO_RECORD or IN_USE."""
    if session.get(TaskQueue, name) is None:
        return NO_RECORD
    busy = session.scalar(select(Task.id).where(Task.queue == name, Task.status.in_(UNFINISHED_STATES))
                          .limit(1))
    if busy is not None:
        return IN_USE
    session.execute(delete(TaskQueue).where(TaskQueue.name == name).execution_options(synchronize_session=False))
    return REMOVED
