"""Every way an attempt starts and ends, in one place: the row's fenced update, the metric, the log line.

started (reserved -> running), succeeded, cancelled, failed, retried (put back
with backoff), past its time limit, lost with its lease, released at shutdown. Both executors end attempts
only through these functions. Each write is fenced by (owner, attempt): one
that finds the task no longer ours changes nothing and counts nothing.
"""
import contextlib
import datetime as dt
import logging
import random
import time
import traceback

from db import Session, attempt_writes, session_scope
from db.dialects import is_transient
from db.models import CANCELLED, FAILED, SUCCEEDED, utcnow
from service import metrics
from service.runner import workflows
from service.runner.context import TimeLimitExceeded, time_limit_message
from service.runner.registry import UnknownTask, registry

log = logging.getLogger(__name__)

RECORD_TRIES = 5  # attempts to write an outcome before leaving it to lease expiry


def started(attempt, owner):
    """Mark a reserved attempt running and commit; False if it must not run (cancelled while it
    waited, its lease taken back, or the write kept failing: then its lease expires)."""
    claim = attempt.claim
    outcome = attempt_writes.GONE

    def start():
        nonlocal outcome
        outcome = attempt_writes.start_task(Session, claim, owner)
        return True

    if not _record(attempt, "running", start):  # the write kept failing: its lease will expire
        outcome = attempt_writes.GONE
    if outcome == attempt_writes.STARTED:
        attempt.started = time.monotonic()
        return True
    if outcome == attempt_writes.THROTTLED:
        metrics.by_name(metrics.THROTTLED, claim.name).inc()
        log.info("task %s waits in the queue for its rate limit (%s starts per %gs)",
                 claim.id, claim.rate_limit, claim.rate_window)
    else:
        log.info("task %s was cancelled or taken back before it started", claim.id)
    return False


def record_success(attempt, owner, result):
    """Record success in the transaction that holds the task's own writes, uncommitted: the
    caller commits both inside committing_success. Returns False, having rolled back the
    task's writes, if the attempt is no longer ours."""
    claim = attempt.claim
    if attempt.abandoned:
        Session.rollback()
        log.warning("task %s returned after it was given up; result discarded", claim.id)
        return False
    if not finish(Session, claim, owner, SUCCEEDED, result=result):
        Session.rollback()
        log.warning("task %s is no longer ours; its writes were rolled back", claim.id)
        return False
    return True


@contextlib.contextmanager
def committing_success(attempt, owner, config):
    """The block commits the success record_success left in the thread's Session (and what
    else it adds to that transaction); if anything in it fails, the task is retried or
    failed as raised() says. Session.remove() after, either way."""
    try:
        yield
    except Exception as error:
        Session.rollback()
        log.warning("task %s: its success could not be committed", attempt.claim.id, exc_info=True)
        raised(attempt, owner, config, error)
    else:
        _counted(attempt, metrics.SUCCEEDED)
    finally:
        Session.remove()


def raised(attempt, owner, config, error, retry_on=()):
    """The attempt raised error (its writes rolled back already): another attempt if the error is
    transient or one of retry_on, else failed."""
    claim = attempt.claim
    tb = traceback.format_exception(error)
    tb = "".join(tb)
    message = f"{type(error).__name__}: {error}"
    if is_transient(error) or isinstance(error, retry_on or ()):
        retried_or_failed(attempt, owner, message, tb, config)
    else:
        log.error("task %s (%s) failed:\n%s", claim.id, claim.name, tb)
        failed(attempt, owner, message, tb)


def cancelled(attempt, owner):
    """The task stopped because it was asked to (its writes are rolled back already)."""
    claim = attempt.claim
    if _record(attempt, "cancelled", lambda: finish(Session, claim, owner, CANCELLED)):
        _counted(attempt, metrics.CANCELLED)


def failed(attempt, owner, message, tb):
    """The task failed for good."""
    claim = attempt.claim
    if _record(attempt, "failed",
               lambda: finish(Session, claim, owner, FAILED, error=message, traceback=tb)):
        _counted(attempt, metrics.FAILED)


def retried_or_failed(attempt, owner, message, tb, config, delay=None):
    """Put the task back to run again after a backoff (or delay) if attempts remain, else fail it."""
    claim = attempt.claim
    if claim.attempt >= claim.max_attempts or attempt.ctx.cancelled:
        log.error("task %s (%s) failed on its last attempt: %s", claim.id, claim.name, message)
        failed(attempt, owner, message, tb)
        return
    if delay is None:
        delay = backoff_seconds(claim.attempt, config.retry_base, config.retry_cap)
    log.warning("task %s (%s) attempt %s failed, retrying in %.1fs: %s",
                claim.id, claim.name, claim.attempt, delay, message)
    run_after = utcnow() + dt.timedelta(seconds=delay)
    if _record(attempt, "retry",
               lambda: attempt_writes.requeue_attempt(Session, claim, owner, run_after, message, tb)):
        _counted(attempt, metrics.RETRIED)


def timed_out(attempt, owner, message, tb, config):
    """The task stopped at its time limit: failed, or retried where its retry_on says so."""
    if _retries_time_limit(attempt.claim.name):
        retried_or_failed(attempt, owner, message, tb, config)
        return
    log.error("task %s (%s) failed: %s", attempt.claim.id, attempt.claim.name, message)
    failed(attempt, owner, message, tb)


def past_time_limit(attempt, owner, config):
    """End a task that ignored its time limit past the grace (failed, or retried where its
    retry_on says so); whatever it returns later is discarded."""
    attempt.abandoned = True
    claim = attempt.claim
    message = time_limit_message(claim.time_limit)
    again = _retries_time_limit(claim.name) and claim.attempt < claim.max_attempts
    with session_scope() as session:
        if again:
            run_after = utcnow() + dt.timedelta(seconds=backoff_seconds(
                claim.attempt, config.retry_base, config.retry_cap))
            written = attempt_writes.requeue_attempt(session, claim, owner, run_after, message)
        else:
            written = finish(session, claim, owner, FAILED, error=message)
    if written:
        metrics.by_name(metrics.RETRIED if again else metrics.FAILED, claim.name).inc()
    log.error("task %s (%s) exceeded its time limit; result will be discarded", claim.id, claim.name)


def leases_lost(lease_seconds):
    """Take back running tasks whose heartbeat is older than the lease: requeue, or fail if spent."""
    with session_scope() as session:
        failed_ids = []
        requeued, failed_count = attempt_writes.recover_expired(session, lease_seconds, failed_ids)
        workflows.tasks_ended(session, failed_ids)
    if requeued or failed_count:
        log.warning("recovered tasks of lost workers: %d requeued, %d failed ('worker lost')",
                    requeued, failed_count)
    return requeued, failed_count


def released(attempts, owner):
    """Put back attempts cut short by shutdown; they do not count. Returns how many were."""
    count = 0
    try:
        with session_scope() as session:
            for attempt in attempts:
                count += attempt_writes.release_task(session, attempt.claim, owner, attempt.started is not None)
    except Exception:
        log.exception("could not requeue %d tasks; their leases will expire", len(attempts))
    return count


def finish(session, claim, owner, status, **values):
    """Record how an attempt ended (finish_task) and, in the same transaction, settle the
    workflow step it ran; False if the task is no longer ours."""
    if not attempt_writes.finish_task(session, claim, owner, status, **values):
        return False
    if claim.workflow_node is not None:
        workflows.task_ended(session, claim.workflow_node, claim.id, (status, values.get("error"), claim.name),
                             claim.step)
    return True


def backoff_seconds(attempt, base, cap):
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retries_time_limit(name):
    """True when the task's retry_on names TimeLimitExceeded (or a base of it)."""
    try:
        return issubclass(TimeLimitExceeded, registry.get(name).retry_on or ())
    except UnknownTask:
        return False


def _counted(attempt, counter):
    """Count how an attempt ended, and how long it ran."""
    metrics.by_name(counter, attempt.claim.name).inc()
    if attempt.started is not None:
        metrics.by_name(metrics.RUN_TIME, attempt.claim.name).observe(time.monotonic() - attempt.started)


def _record(attempt, outcome, write):
    """Write an outcome on the thread's Session, retrying through database faults; True once written.

    False when the attempt was abandoned or is no longer ours, or the write
    kept failing: its lease will expire and another runner takes it back.
    """
    if attempt.abandoned:
        return False
    for number in range(1, RECORD_TRIES + 1):
        try:
            written = write()
            Session.commit()
            return bool(written)
        except Exception as error:
            Session.rollback()
            if not is_transient(error) or number == RECORD_TRIES:
                log.exception("could not record task %s as %s; its lease will expire",
                              attempt.claim.id, outcome)
                return False
            time.sleep(min(5.0, 0.2 * 2**number))
