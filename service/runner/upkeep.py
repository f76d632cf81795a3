"""What a process that runs tasks keeps doing besides running them, whichever executor it uses.

Each poll interval: signal tasks past their time limit (and fail those that
ignore it), save the progress they reported, and queue recurring tasks whose
slot came. Each heartbeat: refresh the
leases of our running tasks, record this process in the runners table, pass
on cancel requests, take back tasks whose lease expired elsewhere, and keep
the counts rolled up and old tasks pruned.
"""
import logging
import os
import socket
import time

from db import attempt_writes, runners, session_scope
from service import metrics
from service.runner import outcomes, workflows
from service.runner.rollup_and_prune import RollupAndPrune
from service.runner.scheduler import Scheduler

log = logging.getLogger(__name__)


class Upkeep:
    """The upkeep of one process's attempts; attempts() returns those it holds now."""

    def __init__(self, owner, config, attempts):
        self.owner = owner
        self.config = config
        self.attempts = attempts
        self.scheduler = Scheduler(config.schedules_enabled, config.schedule_tz)
        self.housekeeping = RollupAndPrune()

    def tick(self):
        """Each poll interval: time limits, progress, schedules, and the busy/idle workers gauge."""
        self.enforce_time_limits()
        self.save_progress()
        self.scheduler.tick()
        # Set here, not per task: under gunicorn each gauge write is a locked file write.
        busy = sum(1 for attempt in self.attempts() if attempt.started is not None)
        metrics.set_workers(busy, max(0, self.config.workers - busy))

    def enforce_time_limits(self):
        """Signal tasks past their time limit; fail those that ignore it past the grace."""
        now = time.monotonic()
        for attempt in self.attempts():
            if attempt.abandoned or not attempt.past_time_limit(now):
                continue
            attempt.ctx.time_out()
            if attempt.past_time_limit(now, self.config.time_limit_grace):
                outcomes.past_time_limit(attempt, self.owner, self.config)

    def save_progress(self):
        """Write the progress that tasks reported since the last tick."""
        pending = []
        for attempt in self.attempts():
            progress = attempt.ctx.take_progress()
            if progress is not None and not attempt.abandoned:
                pending.append((attempt.claim, progress))
        if pending:
            with session_scope() as session:
                for claim, (percent, message) in pending:
                    attempt_writes.save_progress(session, claim, self.owner, percent, message)

    def beat(self):
        """Each heartbeat: leases, our record, cancel requests, lost leases, the tables.

        Returns True when tasks of lost workers were put back in the queue.
        """
        mine = [attempt for attempt in self.attempts() if not attempt.abandoned]
        ids = [attempt.claim.id for attempt in mine]
        busy = sum(1 for attempt in mine if attempt.started is not None)
        with session_scope() as session:
            attempt_writes.heartbeat(session, self.owner, ids)
            runners.record_runner(session, self.owner, socket.gethostname(), os.getpid(),
                                  self.config.workers, busy)
            cancelled = attempt_writes.cancel_requested_ids(session, ids)
        for attempt in mine:
            if attempt.claim.id in cancelled:
                attempt.ctx.cancel()
        requeued, _ = outcomes.leases_lost(self.config.lease)
        workflows.sweep_unswept()  # one whose process died before it cancelled the rest
        self.housekeeping.keep(self.config.retention)
        return bool(requeued)

    def forget(self):
        """Take this process off the list of live ones (a lost one stays, shown as lost)."""
        try:
            with session_scope() as session:
                runners.forget_runner(session, self.owner)
        except Exception:
            log.warning("could not remove runner %s from the runners table", self.owner, exc_info=True)
