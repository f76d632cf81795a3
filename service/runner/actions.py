"""Retry and cancel tasks, one or every one matching a filter (the API, dashboard and CLI share
these, so each counts the same in /metrics).

A retry is a new task with the same name, arguments and limits, linked both
ways (`retry_of` on the new one, `retried_by` on the old one), so the failed
attempt keeps its error and traceback and can be retried only once.
"""
from db import bulk, tasks
from service import metrics
from service.runner import workflows
from service.runner.submit import check_task, insert_allowed
from service.runner.task_rows import QueueFull
from service.runner.registry import InvalidArguments, UnknownTask

CHUNK = 200  # tasks changed per transaction in a bulk action, so no lock is held for long


def cancel_task(session, task_id):
    """Cancel a queued or reserved task, or ask a running one to stop, and commit; return
    (tasks.request_cancel's outcome, the task as it is now). A cancel that took effect at
    once counts in tasks_cancelled_total."""
    outcome = tasks.request_cancel(session, task_id)
    if outcome == tasks.CANCEL_DONE:
        workflows.tasks_ended(session, [task_id])  # a workflow's step: it cancels the workflow
    session.commit()
    task = tasks.get_task(session, task_id) if outcome is not None else None
    if task is not None:
        session.refresh(task)  # the status it has now, not one read before the cancel
    if outcome == tasks.CANCEL_DONE:
        metrics.by_name(metrics.CANCELLED, task.name).inc()
    return outcome, task


class NotRetryable(ValueError):
    """Only a failed or cancelled task, not retried already, can be retried."""


def retry_task(session, task_id):
    """Queue a retry of a failed or cancelled task (not committed); None if there is no such task.

    Everything that can refuse it is checked before anything is written.
    """
    old = tasks.get_task(session, task_id)
    if old is None:
        return None
    if old.status not in bulk.RETRYABLE:
        raise NotRetryable(f"task {task_id} is {old.status}; only failed or cancelled tasks can be retried")
    if old.retried_by is not None:
        raise NotRetryable(f"task {task_id} was retried already, as task {old.retried_by}")
    workflow_id = workflows.retried_with(session, old)
    if workflow_id is not None:  # run alone, it would settle nothing: the workflow reruns it
        raise NotRetryable(f"task {task_id} is a step of workflow {workflow_id}; retry the workflow")
    spec, stored_args = check_task(session, old.name, old.args)
    if not bulk.claim_retry(session, task_id):  # another request retried it meanwhile
        raise NotRetryable(f"task {task_id} was retried already")
    # No second check after that write: a full queue there would leave it marked retried.
    new = insert_allowed(session, spec, stored_args, max_attempts=old.max_attempts,
                      time_limit=old.time_limit, retry_of=old.id, priority=old.priority)
    bulk.set_retry(session, task_id, new.id)
    return new


def retry_matching(session, status=None, name=None, limit=1000, dry_run=False):
    """Retry up to limit failed/cancelled tasks matching the filter, committing every CHUNK.

    Returns (matched, retried): a task whose name or arguments are no longer
    valid is skipped; a full queue stops the run early.
    """
    matched = bulk.count_retryable(session, status, name)
    if dry_run:
        return matched, 0
    ids = bulk.retryable_ids(session, status, name, limit)
    session.rollback()  # end the read before the writes
    retried = 0
    for start in range(0, len(ids), CHUNK):
        names, queue_full = _retry_chunk(session, ids[start:start + CHUNK])
        session.commit()
        retried += len(names)
        if queue_full:
            break
    return matched, retried


def _retry_chunk(session, ids):
    """Retry each of ids, skipping what is refused; return (names retried, whether the queue is full)."""
    names = []
    for task_id in ids:
        try:
            task = retry_task(session, task_id)
        except (NotRetryable, UnknownTask, InvalidArguments):
            continue  # refused before writing anything
        except QueueFull:
            return names, True
        if task is not None:
            names.append(task.name)
    return names, False


def cancel_matching(session, status=None, name=None, limit=1000, dry_run=False):
    """Cancel queued tasks and ask running ones to stop, up to limit, committing every CHUNK.

    Returns (matched, cancelled, asked).
    """
    matched = bulk.count_cancellable(session, status, name)
    if dry_run:
        return matched, 0, 0
    ids = bulk.cancellable_ids(session, status, name, limit)
    session.rollback()
    cancelled = asked = 0
    for start in range(0, len(ids), CHUNK):
        done, flagged = bulk.cancel_ids(session, ids[start:start + CHUNK])
        workflows.tasks_ended(session, ids[start:start + CHUNK])
        session.commit()
        for name, n in done.items():
            metrics.CANCELLED.labels(name).inc(n)
        cancelled, asked = cancelled + sum(done.values()), asked + flagged
    return matched, cancelled, asked
