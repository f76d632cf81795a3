"""The thread pool's dispatcher: claims due tasks for idle workers, a batch at a time, and keeps
the process's upkeep going between claims."""
import contextlib
import logging
import threading
import time

from db import Session, attempt_writes, claimer, claims, session_scope
from db.attempt_writes import STARTED
from service.runner.attempt import Attempt
from service.runner.registry import registry

log = logging.getLogger(__name__)


class Dispatcher:
    """Keeps a process's workers fed from the tasks table (run() is its thread)."""

    def __init__(self, config, process, jobs, stopping):
        self.config = config
        self.process = process  # the RunnerProcess: owner, held attempts, upkeep
        self.jobs = jobs
        self.stopping = stopping
        self.reserved = 0  # slots held for claims still in their transaction (under process.changed)
        self._wake = threading.Event()
        self._submitted = False  # the last wake-up came from a submit
        self._claimer = claimer.Claimer(registry.has_limits, registry.has_fair, keys_for=config.poll_interval)
        self._handing = threading.Lock()  # claims reach the jobs in the order they were claimed
        with session_scope() as session:  # not the caller's registry Session
            self.claims_ride_in_commits = claims.claims_ride_in_commits(session)

    def wake(self, submitted=False):
        """There may be new work: claim now (it also polls on its own)."""
        if submitted:
            self._submitted = True
            self._claimer.new_work()
        self._wake.set()

    def run(self):
        """Claim work for idle workers and keep the process's upkeep until stopping."""
        failures = 0
        while not self.stopping.is_set():
            self._wake.clear()  # a wake-up during the work below is kept for the wait
            claimed_all = False
            try:
                claimed_all = self.claim()
                if self.process.upkeep_step():
                    self._wake.set()  # tasks of a lost worker are back in the queue
                failures = 0
            except Exception:
                failures += 1
                log.exception("runner %s: database error in dispatcher", self.process.owner)
            finally:
                Session.remove()
            if claimed_all and not failures:
                continue  # there may be more due work right now
            timeout = min(self.config.poll_interval * min(2**failures, 20),  # or when a rate has room
                          self._claimer.room_in() if not failures else float("inf"))
            if self._wake.wait(timeout) and self._submitted:
                # Under a stream of submits, gather a few before the next claim
                # instead of running one claim transaction per submitted task.
                # (Workers asking for more need no gap: they wake it a batch at a time.)
                self._submitted = False
                self.stopping.wait(self.config.claim_gap)

    def claim(self):
        """Claim a batch once a batch's worth of slots is free; True if it got all it asked for.

        Up to `prefetch` claimed tasks wait beyond the busy workers, so workers
        never wait for a claim, and one claim transaction serves several tasks.
        """
        with self.claim_in(Session) as (limit, taken):
            if limit:
                Session.commit()
        return bool(limit) and len(taken) == limit

    @contextlib.contextmanager
    def finishing(self, session):
        """Around a succeeding task's commit: start the worker's next attempt in it (saving that
        start a commit), and where claims ride in commits (SQLite) claim the next batch in it
        too. Yields a list holding, once the block has committed, that next attempt if any.

        On SQLite the finishing task holds the one write lock, so a claim there waits for nobody;
        the heartbeat skips rows another transaction holds, so it cannot deadlock with this."""
        following = self.jobs.take_waiting()
        after = []
        try:
            started = (following is not None and following.claim.rate_key is None  # a rated start: its own commit
                       and attempt_writes.start_task(session, following.claim, self.process.owner) == STARTED)
            with self.claim_in(session) if self.claims_ride_in_commits else contextlib.nullcontext():
                yield after
        except BaseException:
            if following is not None:  # not started (or its start rolled back): it waits again
                self.jobs.put(following)
            raise
        if following is not None:
            if started:
                following.started = time.monotonic()
            after.append(following)  # not started here: run_attempt starts it, or finds it cancelled

    def needed(self):
        """After a task: should the dispatcher claim? (A wake-up costs a GIL switch.) Where
        finishing tasks claim, only when the claimed stock is gone and a worker is about to idle."""
        if self.claims_ride_in_commits:
            return bool(self._claimable()) and self.process.count() < self.config.workers
        return bool(self._claimable())

    @contextlib.contextmanager
    def claim_in(self, session):
        """Reserve free slots and claim them in session's transaction; yield (limit, claims).

        The block commits that transaction: the claims go to the workers only if
        it ends without an exception.
        """
        limit = self._reserve()
        taken = []
        handing = False
        try:
            if limit:
                taken = self._claimer.claim(session, self.process.owner, limit, self.config.queues)
            if taken:
                # Held from the claim to the hand-over: a claim that commits later
                # (claims take the database's write lock in turn) reaches the
                # workers later, so one worker runs tasks exactly in claim order.
                self._handing.acquire()
                handing = True
            yield limit, taken
        except BaseException:
            taken = []
            raise
        finally:
            try:
                if limit:
                    self._settle(limit, taken)
            finally:
                if handing:
                    self._handing.release()

    def _reserve(self):
        """Hold the free slots for one claim; 0 if too few are free or we are stopping."""
        with self.process.changed:
            if self.stopping.is_set():
                return 0
            limit = min(self._claimable(), self.config.claim_batch)
            self.reserved += limit
            return limit

    def _settle(self, reserved, taken):
        """Give back a reservation and hand its committed claims to the workers; claimed while
        stopping, they go straight back to the queue."""
        attempts = [Attempt(claim) for claim in taken]
        with self.process.changed:
            self.reserved -= reserved
            stopping = self.stopping.is_set()
            if not stopping:
                self.process.hold(attempts)
            self.process.changed.notify_all()
        if stopping:
            self.process.release(attempts)
            return
        for attempt in attempts:
            self.jobs.put(attempt)

    def _claimable(self):
        """How many tasks to claim now (claim_size)."""
        return claim_size(self.config.workers, self.config.prefetch, self.process.count() + self.reserved)


def claim_size(workers, prefetch, taken):
    """How many tasks to claim with taken slots in use: 0 until a batch's worth of slots is free.

    A batch is half the slots while the claimed stock can cover every
    worker (a claim costs about as much for 8 rows as for 4), else a
    worker's worth, or a single slot without prefetch (None: 3 per worker).
    """
    prefetch = 3 * workers if prefetch is None else prefetch
    slots = workers + prefetch
    batch = slots // 2 if prefetch >= workers else max(1, min(workers, prefetch))
    free = slots - taken
    return free if free >= batch else 0
