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
import hashlib
import json
import logging
import re
import threading
import time
import typing

from sqlalchemy import event

from db import keys, tasks
from db.models import DEFAULT_QUEUE, Task, utcnow
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
unique_window = 86_400.0  # UNIQUE_WINDOW: seconds a finished task keeps its unique key
_listeners = []  # called with [Enqueued] after each commit that queued tasks
UNIQUE_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII, as a header carries it (fullmatch)


def configure(max_queued, window=86_400.0):
    """Bound this process's submissions by TASK_MAX_QUEUED; keep unique keys UNIQUE_WINDOW seconds."""
    global backlog, unique_window
    backlog = Backlog(max_queued)
    unique_window = window


def enqueue(session, name, args=None, *, delay=None, run_at=None, max_attempts=None, time_limit=None,
            priority=None, unique_key=None, cancel_on_failure=True):
    """Check the task and add its queued row to the session's transaction (not committed): the
    one way to submit a task from code. The task exists if and only if that transaction commits.

    Raises UnknownTask, InvalidArguments or QueueFull before anything is written.
    A chain, group or chord (service.runner.canvas) in place of name is submitted as a
    workflow the same way: args and the task options do not apply; cancel_on_failure: when a
    step fails, cancel the unfinished ones (else they finish). Returns (workflow id, ids of
    the tasks it starts with); canvas.InvalidWorkflow names a bad step.
    priority: higher runs first (-100..100); the task's own default if None.
    unique_key: while a task submitted with this key is unfinished, or for
    UNIQUE_WINDOW seconds after it finished, return that task instead of adding
    one (keys.KeyReused if it was submitted with anything else).
    """
    if not isinstance(name, str):  # a workflow: imported here, it builds on this module
        from service.runner import workflows
        return workflows.submit(session, name, cancel_on_failure)
    return enqueue_or_find(session, name, args, delay=delay, run_at=run_at, max_attempts=max_attempts,
                           time_limit=time_limit, priority=priority, unique_key=unique_key)[0]


def enqueue_or_find(session, name, args, *, delay=None, run_at=None, max_attempts=None,
                    time_limit=None, priority=None, unique_key=None):
    """enqueue(), also saying whether the task is new: (task, True), or the task that holds
    unique_key and False (the API answers 200 instead of 202 for it)."""
    spec = registry.get(name)
    stored_args = spec.normalize_args(args)
    if unique_key is not None:
        check_unique_key(unique_key)
        fingerprint = submit_fingerprint(name, stored_args, delay=delay, run_at=run_at,
                                         max_attempts=max_attempts, time_limit=time_limit,
                                         priority=priority)
        holder = keys.reserve(session, unique_key, fingerprint, unique_window)
        if holder is not None:
            return session.get(Task, holder, populate_existing=True), False
    backlog.check(session)
    task = insert_allowed(session, spec, stored_args, delay, run_at, max_attempts, time_limit,
                       priority=priority)
    if unique_key is not None:
        keys.bind(session, unique_key, task.id)
    return task, True


def check_unique_key(key):
    """Raise ValueError unless key can be a unique key (1-200 visible ASCII characters)."""
    if not isinstance(key, str) or not UNIQUE_KEY.fullmatch(key):
        raise ValueError("a unique key is 1-200 visible ASCII characters (no spaces)")
    return key


def submit_fingerprint(name, args, **options):
    """What identifies a submit: its task, arguments and the options it gave."""
    given = {key: value.isoformat() if isinstance(value, dt.datetime) else value
             for key, value in options.items() if value is not None}
    text = json.dumps({"name": name, "args": args, **given}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def insert_allowed(session, spec, stored_args, delay=None, run_at=None, max_attempts=None,
                time_limit=None, retry_of=None, priority=None, due=None):
    """Add the row of a task check_task() allowed (actions.retry_task writes in between).

    due: when it became due, if before now (a schedule's slot); else from delay or run_at.
    """
    row = task_row(spec, stored_args, delay, run_at, max_attempts, time_limit, retry_of, priority, due)
    return insert_rows(session, [row])[0]


def task_row(spec, stored_args, delay=None, run_at=None, max_attempts=None, time_limit=None,
             retry_of=None, priority=None, due=None):
    """The row (tasks.insert_task's arguments) of a task check_task() allowed; ValueError for a bad priority."""
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
    )


def insert_rows(session, rows):
    """Insert task_row()s in the session's transaction (not committed); return their Tasks.

    Several go in one statement; all are announced after the transaction commits.
    """
    made = tasks.insert_tasks(session, rows) if len(rows) > 1 else [tasks.insert_task(session, **rows[0])]
    pending = session.info.setdefault(PENDING, [])
    for row, task in zip(rows, made):
        pending.append(Enqueued(task.id, row["name"], row["retry_of"], row["run_after"], row["queue"]))
    return made


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
