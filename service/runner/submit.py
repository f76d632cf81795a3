"""Submitting a task or a workflow: its rows join the caller's transaction (transactional enqueue).

`enqueue(session, name, args, ...)` checks the task, then inserts its row in
the session's current transaction and does not commit: the task exists if and
only if the caller's own writes commit with it. Only after that commit does
this process tell whoever runs tasks (task_rows), so no worker can look for a
row before it is there; a rollback forgets the task. The web, the CLI and tasks
themselves submit this way, and need no executor of their own to do it.
"""
import datetime as dt
import hashlib
import json
import re

from db import keys
from db.models import Task
from service.runner import task_rows, workflows
from service.runner.registry import registry
from service.runner.task_rows import insert_rows, task_row

__all__ = ["check_task", "check_unique_key", "configure", "enqueue", "enqueue_or_find",
           "insert_allowed"]

unique_window = 86_400.0  # UNIQUE_WINDOW: seconds a finished task keeps its unique key
UNIQUE_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII, as a header carries it (fullmatch)


def configure(max_queued, window=86_400.0):
    """Bound this process's submissions by TASK_MAX_QUEUED; keep unique keys UNIQUE_WINDOW seconds."""
    global unique_window
    task_rows.bound(max_queued)
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
    if not isinstance(name, str):  # a workflow
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
    task_rows.backlog.check(session)
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
    """Add the row of a task check_task() allowed (actions.retry_task writes in between);
    due as task_rows.task_row takes it."""
    row = task_row(spec, stored_args, delay, run_at, max_attempts, time_limit, retry_of, priority, due)
    return insert_rows(session, [row])[0]


def check_task(session, name, args):
    """Return (spec, args to store) for a task that may be queued now; raise if it may not."""
    spec = registry.get(name)
    stored_args = spec.normalize_args(args)
    task_rows.backlog.check(session)
    return spec, stored_args


