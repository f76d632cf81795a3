"""One attempt of a claimed task: run its function with a context, then record how it ended."""
import json
import logging
import traceback

from db import Session
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


def run_attempt(attempt, owner, config):
    """Mark the reserved task running, run its function and record how it ended.

    A failure, a retry or a cancel is committed here. A success is recorded in
    the thread's registry Session beside the task's own writes and left for
    the caller to commit (inside outcomes.committing_success, where the thread
    pool adds its next start to that commit): True then. So the task's writes
    and its final status share one transaction, and a crash anywhere before
    that commit undoes both. Session.remove() runs after every other ending. A
    task cancelled while it waited (or whose lease was taken back) does not run.
    """
    claim = attempt.claim
    if attempt.started is None:  # else marked running in the commit that ended the one before
        try:
            if not outcomes.started(attempt, owner):
                return False
        finally:
            Session.remove()  # the task's own unit starts afresh (a held connection idle since is checked)
    metrics.observe_start(claim.name, claim.run_after)
    logged = logs.running(claim, owner)
    spec = None
    recorded = False
    try:
        spec = registry.get(claim.name)
        attempt.ctx.raise_if_cancelled()
        args = spec.load_args(claim.args)
        result = spec.fn(attempt.ctx, **args)
        json.dumps(result)  # a result must be storable; TypeError fails the task
        recorded = outcomes.record_success(attempt, owner, result)
        return recorded
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
        outcomes.raised(attempt, owner, config, error, spec.retry_on if spec is not None else ())
    finally:
        if not recorded:  # else the caller's commit still needs the Session
            Session.remove()
        logs.finished(logged)
    return False
