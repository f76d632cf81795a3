"""Validate a task and add its row to the queue."""
import datetime as dt

from db import tasks
from db.models import utcnow
from service.runner.registry import registry


class QueueFull(RuntimeError):
    """The backlog is at its bound; the client should try again later."""

    def __init__(self, max_queued):
        super().__init__(f"the task queue is full ({max_queued} tasks waiting)")
        self.max_queued = max_queued


def add_task(session, name, args, max_queued, delay=None, run_at=None, max_attempts=None,
             time_limit=None):
    """Validate name and args, check the backlog, insert the queued row (not committed)."""
    spec = registry.get(name)
    stored_args = spec.normalize_args(args)
    if tasks.count_queued(session) >= max_queued:
        raise QueueFull(max_queued)
    run_after = None
    if delay:
        run_after = utcnow() + dt.timedelta(seconds=delay)
    elif run_at is not None:
        run_after = run_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return tasks.insert_task(
        session,
        name,
        stored_args,
        run_after=run_after,
        max_attempts=max_attempts or spec.max_attempts,
        time_limit=time_limit if time_limit is not None else spec.time_limit,
    )
