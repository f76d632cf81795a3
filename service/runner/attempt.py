"""One attempt of a claimed task: run its function with a context, then record how it ended."""
import contextlib
import json
import logging
import traceback

from db import Session
from db.dialects import is_transient
from service import logs, metrics
from service.runner import outcomes
from service.runner.context import RetryTask, TaskCancelled, TaskContext, TimeLimitExceeded
from service.runner.registry import InvalidArguments, UnknownTask, registry

log = logging.getLogger(__name__)


class Attempt:
    """One attempt in this process: its claim, its context and its clock."""

    def __init__(self, claim):
        self.claim = claim
        self.ctx = TaskContext(claim.id, claim.attempt, claim.max_attempts, claim.time_limit)
        self.started = None  # time.monotonic() when it was marked running
        self.abandoned = False  # its outcome was recorded elsewhere; discard its own
        if claim.cancel_requested:
            self.ctx.cancel()

    def past_time_limit(self, now, grace=0.0):
        """True when the task has run longer than its time limit plus grace."""
        limit = self.claim.time_limit
        return limit is not None and self.started is not None and now - self.started > limit + grace


def run_attempt(attempt, owner, config, around_commit=contextlib.nullcontext):
    """Mark the reserved task running, run its function and commit its writes with its outcome.

    The task's own writes and its final status share one transaction on the
    thread's registry Session, so a crash anywhere before commit undoes both;
    Session.remove() runs after every attempt, on every path. A task cancelled
    while it waited (or whose lease was taken back) does not run at all.
    around_commit(session) wraps that commit (on SQLite the thread pool starts its next
    attempt and claims more work in it).
    """
    claim = attempt.claim
    if attempt.started is None:  # else marked running in the commit that ended the one before
        try:
            if not outcomes.started(attempt, owner):
                return
        finally:
            Session.remove()  # the task's own unit starts afresh (a held connection idle since is checked)
    metrics.observe_start(claim.name, claim.run_after)
    logged = logs.running(claim, owner)
    spec = None
    try:
        spec = registry.get(claim.name)
        attempt.ctx.raise_if_cancelled()
        args = spec.load_args(claim.args)
        result = spec.fn(attempt.ctx, **args)
        json.dumps(result)  # a result must be storable; TypeError fails the task
        outcomes.succeeded(attempt, owner, result, around_commit)
    except TimeLimitExceeded as error:
        Session.rollback()
        outcomes.timed_out(attempt, owner, str(error), traceback.format_exc(), config)
    except TaskCancelled:
        Session.rollback()
        outcomes.cancelled(attempt, owner)
    except RetryTask as request:
        Session.rollback()
        outcomes.retried_or_failed(attempt, owner, str(request), traceback.format_exc(), config,
                                   delay=request.delay)
    except (UnknownTask, InvalidArguments) as error:
        Session.rollback()
        outcomes.failed(attempt, owner, str(error), None)
    except Exception as error:
        Session.rollback()
        tb = traceback.format_exc()
        message = f"{type(error).__name__}: {error}"
        if is_transient(error) or (spec is not None and isinstance(error, spec.retry_on)):
            outcomes.retried_or_failed(attempt, owner, message, tb, config)
        else:
            log.error("task %s (%s) failed:\n%s", claim.id, claim.name, tb)
            outcomes.failed(attempt, owner, message, tb)
    finally:
        Session.remove()
        logs.finished(logged)
