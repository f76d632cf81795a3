"""Validate a task and add its row to the queue."""
import datetime as dt
import threading
import time

from db import tasks
from db.models import utcnow
from service.runner.registry import registry


class QueueFull(RuntimeError):
    """The backlog is at its bound; the client should try again later."""

    def __init__(self, max_queued):
        super().__init__(f"the task queue is full ({max_queued} tasks waiting)")
        self.max_queued = max_queued


class Backlog:
    """How many tasks wait, known cheaply: a COUNT at most max_age seconds old plus
    the submissions this process made since. Counting on every submit would cost
    a scan of the queue per request; other processes can overshoot the bound by
    what they submit within max_age."""

    def __init__(self, limit, max_age=1.0):
        self.limit = limit
        self.max_age = max_age
        self._lock = threading.Lock()
        self._count = 0
        self._counted_at = None

    def check(self, session):
        """Raise QueueFull if the backlog is at its limit."""
        now = time.monotonic()
        if self._counted_at is None or now - self._counted_at > self.max_age:
            count = tasks.count_queued(session)
            with self._lock:
                self._count, self._counted_at = count, now
        if self._count >= self.limit:
            raise QueueFull(self.limit)

    def added(self):
        """Count a task this process just queued."""
        with self._lock:
            self._count += 1


def add_task(session, name, args, backlog, delay=None, run_at=None, max_attempts=None,
             time_limit=None, retry_of=None):
    """Validate name and args, check the backlog, insert the queued row (not committed)."""
    spec, stored_args = check_task(session, name, args, backlog)
    return tasks.insert_task(
        session,
        name,
        stored_args,
        run_after=start_time(delay, run_at),
        max_attempts=max_attempts or spec.max_attempts,
        time_limit=time_limit if time_limit is not None else spec.time_limit,
        retry_of=retry_of,
    )


def check_task(session, name, args, backlog):
    """Return (spec, args to store) for a task that may be queued now; raise if it may not."""
    spec = registry.get(name)
    stored_args = spec.normalize_args(args)
    backlog.check(session)
    return spec, stored_args


def start_time(delay=None, run_at=None):
    """When a task may first run (naive UTC), or None for now.

    A run_at in the past means now, so an old timestamp cannot jump the queue
    (or fall below the oldest time MySQL stores); one past the year 9999 in
    UTC is the latest time both databases hold.
    """
    now = utcnow()
    if delay:
        return now + dt.timedelta(seconds=delay)
    if run_at is None:
        return None
    try:
        when = run_at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except OverflowError:  # moved to UTC it left years 1..9999
        when = dt.datetime.max if run_at.year == dt.MAXYEAR else now
    return max(when, now)
