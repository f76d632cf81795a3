"""Named queues: which are paused, and how many tasks wait or run in each."""
import collections

from sqlalchemy import func, select, update

from db.models import QUEUED, RUNNING, Task, TaskQueue, utcnow


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


def list_queues(session, known=()):
    """Every queue known (registered, ever paused, or holding tasks) as dicts, by name."""
    states = {row.name: row for row in session.scalars(select(TaskQueue))}
    counts = collections.Counter()
    for status in (QUEUED, RUNNING):  # one status per query: SQLite's partial indexes need it said so
        counts.update({(queue, status): n for queue, n in session.execute(
            select(Task.queue, func.count()).where(Task.status == status).group_by(Task.queue))})
    names = sorted(set(known) | set(states) | {queue for queue, _ in counts})
    return [{"name": name, "paused": bool(states[name].paused) if name in states else False,
             "changed_at": states[name].changed_at if name in states else None,
             "queued": counts[(name, QUEUED)], "running": counts[(name, RUNNING)]} for name in names]
