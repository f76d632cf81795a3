"""Task rows joining the caller's transaction: the backlog bound, and the word sent after commit.

A queued row is announced (to the thread pool's wake-up, the Celery publish) only after
the transaction that inserted it commits, so no worker looks for a row before it is
there; a rollback forgets it. Tasks and workflow steps are both inserted here.
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
from service.runner.registry import check_priority

log = logging.getLogger(__name__)

PENDING = "service.enqueued"  # session.info key: the Enqueued tasks its transaction added


class Enqueued(typing.NamedTuple):
    """A task a commit added: what the executors need to hear of it."""

    id: int
    name: str
    retry_of: int | None
    run_after: dt.datetime | None  # None: due at once
    queue: str = DEFAULT_QUEUE
    fair: bool = False  # it takes turns by key: a relay hands it to a broker in its turn


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

    def check(self, session, adding=1):
        """Raise QueueFull unless adding more tasks stays within the limit, counting what
        session has queued but not committed."""
        now = time.monotonic()
        if self._counted_at is None or now - self._counted_at > self.max_age:
            count = tasks.count_queued(session)
            with self._lock:
                self._count, self._counted_at = count, now
        if self._count + len(session.info.get(PENDING, ())) + adding > self.limit:
            raise QueueFull(self.limit)

    def added(self, n=1):
        """Count tasks this process just queued."""
        with self._lock:
            self._count += n


backlog = Backlog(10_000)  # this process's; bound() sets it from TASK_MAX_QUEUED (read it as task_rows.backlog)
_listeners = []  # called with [Enqueued] after each commit that queued tasks


def bound(max_queued):
    """Refuse submissions beyond max_queued waiting tasks (TASK_MAX_QUEUED)."""
    global backlog
    backlog = Backlog(max_queued)


def task_row(spec, stored_args, delay=None, run_at=None, max_attempts=None, time_limit=None,
             retry_of=None, priority=None, due=None):
    """The row (tasks.insert_task's arguments) of a checked task; ValueError for a bad priority.

    due: when it became due, if before now (a schedule's slot); else from delay or run_at.
    """
    return dict(
        name=spec.name,
        args=stored_args,
        run_after=due or start_time(delay, run_at),
        max_attempts=max_attempts or spec.max_attempts,
        time_limit=time_limit if time_limit is not None else spec.time_limit,
        retry_of=retry_of,
        priority=spec.priority if priority is None else check_priority(priority),
        queue=spec.queue,
        limit_key=spec.limit_key(stored_args),
        concurrency=spec.concurrency,
        rate_key=spec.rate_key_for(stored_args),
        rate_limit=spec.rate.count if spec.rate else None,
        rate_window=spec.rate.window if spec.rate else None,
        fair_key=spec.fair_key_for(stored_args),
    )


def insert_rows(session, rows):
    """Insert task_row()s in the session's transaction (not committed); return their Tasks.

    Several go in one statement; all are announced after the transaction commits.
    """
    made = tasks.insert_tasks(session, rows) if len(rows) > 1 else [tasks.insert_task(session, **rows[0])]
    pending = session.info.setdefault(PENDING, [])
    for row, task in zip(rows, made):
        pending.append(Enqueued(task.id, row["name"], row["retry_of"], row["run_after"], row["queue"],
                                row.get("fair_key") is not None))
    return made


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
