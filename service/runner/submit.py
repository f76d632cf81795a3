"""Submitting a task: its row joins the caller's transaction (transactional enqueue).

`enqueue(session, name, args, ...)` checks the task, then inserts its row in
the session's current transaction and does not commit: the task exists if and
only if the caller's own writes commit with it. Only after that commit does
this process tell whoever runs tasks (the thread pool wakes, the Celery
executor publishes the id), so no worker can look for a row before it is
there; a rollback forgets the task. The web, the CLI and tasks themselves
submit this way, and need no executor of their own to do it.
"""
import datetime as dt
import logging
import threading
import time
import typing

from sqlalchemy import event

from db import tasks
from db.models import DEFAULT_QUEUE, utcnow
from db.session import session_factory
from service import metrics
from service.runner.registry import check_priority, registry

log = logging.getLogger(__name__)

PENDING = "service.enqueued"  # session.info key: the Enqueued tasks its transaction added


class Enqueued(typing.NamedTuple):
    """A task a commit added: what the executors need to hear of it."""

    id: int
    name: str
    retry_of: int | None
    run_after: dt.datetime | None  # None: due at once
    queue: str = DEFAULT_QUEUE


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
        """Raise QueueFull if the backlog is at its limit, counting what session has queued but not committed."""
        now = time.monotonic()
        if self._counted_at is None or now - self._counted_at > self.max_age:
            count = tasks.count_queued(session)
            with self._lock:
                self._count, self._counted_at = count, now
        if self._count + len(session.info.get(PENDING, ())) >= self.limit:
            raise QueueFull(self.limit)

    def added(self, n=1):
        """Count tasks this process just queued."""
        with self._lock:
            self._count += n


backlog = Backlog(10_000)  # this process's; configure() sets its bound from TASK_MAX_QUEUED
_listeners = []  # called with [Enqueued] after each commit that queued tasks


def configure(max_queued):
    """Bound this process's submissions by TASK_MAX_QUEUED."""
    global backlog
    backlog = Backlog(max_queued)


def enqueue(session, name, args, delay=None, run_at=None, max_attempts=None, time_limit=None,
            retry_of=None, priority=None):
    """Check the task and add its queued row to the session's transaction (not committed).

    Raises UnknownTask, InvalidArguments or QueueFull before anything is written.
    priority: higher runs first (-100..100); the task's own default if None.
    """
    spec, stored_args = check_task(session, name, args)
    return add_checked(session, spec, stored_args, delay, run_at, max_attempts, time_limit, retry_of,
                       priority)


def add_checked(session, spec, stored_args, delay=None, run_at=None, max_attempts=None,
                time_limit=None, retry_of=None, priority=None):
    """Add the row of a task check_task() allowed (manage.retry_task writes in between)."""
    name = spec.name
    run_after = start_time(delay, run_at)
    priority = spec.priority if priority is None else check_priority(priority)
    task = tasks.insert_task(
        session,
        name,
        stored_args,
        run_after=run_after,
        max_attempts=max_attempts or spec.max_attempts,
        time_limit=time_limit if time_limit is not None else spec.time_limit,
        retry_of=retry_of,
        priority=priority,
        queue=spec.queue,
    )
    session.info.setdefault(PENDING, []).append(
        Enqueued(task.id, name, retry_of, run_after, spec.queue))
    return task


def check_task(session, name, args):
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


def on_commit(listener):
    """Call listener([Enqueued, ...]) after every commit in this process that queued tasks."""
    _listeners.append(listener)


def remove_listener(listener):
    if listener in _listeners:
        _listeners.remove(listener)


@event.listens_for(session_factory, "after_commit")
def _committed(session):
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    added = session.info.pop(PENDING, None)
    if not added:
        return
    backlog.added(len(added))
    for task in added:
        metrics.SUBMITTED.labels(task.name).inc()
        if task.retry_of is not None:  # a user retried a failed or cancelled task
            metrics.RETRIED.labels(task.name).inc()
    for listener in list(_listeners):
        try:
            listener(added)
        except Exception:  # the tasks are committed: a listener's trouble must not undo the answer
            log.exception("after-commit listener %r failed; the tasks stay queued", listener)


@event.listens_for(session_factory, "after_transaction_end")
def _ended(session, transaction):
    """The outermost transaction ended without a commit (after_commit took the list): forget.

    Back to a savepoint, the outer transaction goes on and its tasks stay pending (one added
    inside the savepoint is announced with them, and claims nothing where it is looked for).
    """
    if transaction.parent is None:
        session.info.pop(PENDING, None)
