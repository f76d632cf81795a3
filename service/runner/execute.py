"""Run one claimed attempt of a task and record how it ended."""
import contextlib
import datetime as dt
import json
import logging
import time
import traceback

from db import Session, tasks
from db.models import CANCELLED, FAILED, SUCCEEDED, utcnow
from service import logs, metrics
from service.runner.context import RetryTask, TaskCancelled, TaskContext
from service.runner.registry import InvalidArguments, UnknownTask, registry
from service.runner.retry import backoff_seconds, is_transient

log = logging.getLogger(__name__)

RECORD_TRIES = 5  # attempts to write an outcome before leaving it to lease expiry


class Execution:
    """One attempt in this process: its claim, its context and its clock."""

    def __init__(self, claim):
        self.claim = claim
        self.ctx = TaskContext(claim.id, claim.attempt, claim.max_attempts)
        self.started = None  # time.monotonic() when the function was called
        self.abandoned = False  # its outcome was recorded elsewhere; discard its own
        if claim.cancel_requested:
            self.ctx.cancel()

    def past_time_limit(self, now, grace=0.0):
        """True when the task has run longer than its time limit plus grace."""
        limit = self.claim.time_limit
        return limit is not None and self.started is not None and now - self.started > limit + grace


def run_execution(execution, owner, config, around_commit=contextlib.nullcontext):
    """Run the task function and commit its writes together with its outcome.

    The task's own writes and its final status share one transaction on the
    thread's registry Session, so a crash anywhere before commit undoes both.
    around_commit(session) wraps that commit (the runner claims more work in it).
    """
    claim = execution.claim
    metrics.observe_start(claim.name, claim.run_after)
    logged = logs.running(claim, owner)
    try:
        spec = registry.get(claim.name)
        execution.ctx.raise_if_cancelled()
        args = spec.load_args(claim.args)
        execution.started = time.monotonic()
        result = spec.fn(execution.ctx, **args)
        json.dumps(result)  # a result must be storable; TypeError fails the task
        if execution.abandoned:
            Session.rollback()
            log.warning("task %s returned after it was given up; result discarded", claim.id)
            return
        if not tasks.finish_task(Session, claim, owner, SUCCEEDED, result=result):
            Session.rollback()
            log.warning("task %s is no longer ours; its writes were rolled back", claim.id)
            return
        with around_commit(Session):
            Session.commit()
        _counted(execution, metrics.SUCCEEDED)
    except TaskCancelled:
        Session.rollback()
        if _record(execution, "cancelled", lambda: tasks.finish_task(Session, claim, owner, CANCELLED)):
            _counted(execution, metrics.CANCELLED)
    except RetryTask as request:
        Session.rollback()
        delay = request.delay
        if delay is None:
            delay = backoff_seconds(claim.attempt, config.retry_base, config.retry_cap)
        _fail_or_retry(execution, owner, str(request), traceback.format_exc(), delay)
    except (UnknownTask, InvalidArguments) as error:
        Session.rollback()
        _record_failure(execution, owner, str(error), None)
    except Exception as error:
        Session.rollback()
        tb = traceback.format_exc()
        message = f"{type(error).__name__}: {error}"
        if is_transient(error):
            delay = backoff_seconds(claim.attempt, config.retry_base, config.retry_cap)
            _fail_or_retry(execution, owner, message, tb, delay)
        else:
            log.error("task %s (%s) failed:\n%s", claim.id, claim.name, tb)
            _record_failure(execution, owner, message, tb)
    finally:
        Session.remove()
        logs.finished(logged)


def _fail_or_retry(execution, owner, message, tb, delay):
    """Queue another attempt if any remain, else record the failure."""
    claim = execution.claim
    if claim.attempt >= claim.max_attempts or execution.ctx.cancelled:
        log.error("task %s (%s) failed on its last attempt: %s", claim.id, claim.name, message)
        _record_failure(execution, owner, message, tb)
        return
    log.warning("task %s (%s) attempt %s failed, retrying in %.1fs: %s",
                claim.id, claim.name, claim.attempt, delay, message)
    run_after = utcnow() + dt.timedelta(seconds=delay)
    if _record(execution, "retry",
               lambda: tasks.retry_task(Session, claim, owner, run_after, message, tb)):
        _counted(execution, metrics.RETRIED)


def _record_failure(execution, owner, message, tb):
    claim = execution.claim
    if _record(execution, "failed",
               lambda: tasks.finish_task(Session, claim, owner, FAILED, error=message, traceback=tb)):
        _counted(execution, metrics.FAILED)


def _counted(execution, counter):
    """Count how an attempt ended, and how long it ran."""
    counter.labels(execution.claim.name).inc()
    if execution.started is not None:
        metrics.RUN_TIME.labels(execution.claim.name).observe(time.monotonic() - execution.started)


def _record(execution, outcome, write):
    """Write an outcome, retrying through database faults; True once it is written.

    False when the attempt was abandoned or is no longer ours, or the write
    kept failing: its lease will expire and another runner takes it back.
    """
    if execution.abandoned:
        return False
    for attempt in range(1, RECORD_TRIES + 1):
        try:
            written = write()
            Session.commit()
            return bool(written)
        except Exception as error:
            Session.rollback()
            if not is_transient(error) or attempt == RECORD_TRIES:
                log.exception("could not record task %s as %s; its lease will expire",
                              execution.claim.id, outcome)
                return False
            time.sleep(min(5.0, 0.2 * 2**attempt))
