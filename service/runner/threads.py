"""The thread-pool executor: a bounded pool of task threads fed from the tasks table.

A dispatcher thread claims due rows (a batch at a time, fenced so two
processes never take the same row) for a fixed number of worker threads, and
keeps this process's upkeep (service.runner.upkeep); tasks submitted in this
process wake it after their commit (service.runner.submit).
"""
import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
import uuid

from db import HeldConnection, Session, claims, fenced, session_scope
from service import metrics
from service.runner import outcomes, submit
from service.runner.attempt import Attempt, run_attempt
from service.runner.executor import Executor
from service.runner.registry import registry
from service.runner.upkeep import Upkeep

log = logging.getLogger(__name__)

IDLE_HOLD = 0.5  # seconds an idle worker keeps its connection (under HeldConnection.FRESH_FOR)
STOP = ((-math.inf,), None)  # the job that tells a worker thread to exit (ahead of any task)


class ThreadExecutor(Executor):
    """Claims due tasks and runs them on a fixed number of threads.

    Start it in the process that will run tasks (after any fork); start() is
    idempotent and starts afresh in a forked child.
    """

    def __init__(self, config):
        self.config = config
        self.owner = None
        self._pid = None
        self._lock = threading.Lock()
        self._threads = []
        self._dispatcher = None

    def runs_here(self):
        return self.config.workers > 0

    def wake(self):
        """Tell the dispatcher there may be new work (it also polls on its own)."""
        if self._dispatcher is not None:
            self._submitted = True
            self._wake.set()

    def _on_enqueued(self, added):
        """After a commit in this process queued tasks: claim them soon."""
        self.wake()

    def _held(self):
        """The attempts this process holds now (claimed, running or about to)."""
        return list(self._active.values())

    # -- lifecycle --------------------------------------------------------

    def start(self):
        """Start the dispatcher and worker threads in this process if not running."""
        with self._lock:
            if self._pid == os.getpid() and self.alive():
                return
            self._pid = os.getpid()
            self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._stopping = threading.Event()
            self._wake = threading.Event()
            self._submitted = False  # the last wake-up came from a submit
            self._claimer = claims.Claimer(registry.has_limits)
            self._jobs = queue.PriorityQueue()  # (claim order, Attempt): the claimed, highest priority first
            self._handing = threading.Lock()  # claims reach _jobs in the order they were claimed
            self._active = {}  # task id -> Attempt, claimed by this process
            self._reserved = 0  # slots held for claims still in their transaction
            self._local = threading.local()  # a worker's next attempt, started in its last commit
            metrics.set_workers(0, self.config.workers)
            with session_scope() as session:  # not the caller's registry Session
                self._inline_claims = claims.claims_ride_in_commits(session)
            self._upkeep = Upkeep(self.owner, self.config, self._held)
            submit.on_commit(self._on_enqueued)
            self._changed = threading.Condition()
            self._threads = [
                threading.Thread(target=self._work, name=f"task-worker-{n}", daemon=True)
                for n in range(self.config.workers)
            ]
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="task-dispatcher", daemon=True
            )
            for thread in self._threads:
                thread.start()
            self._dispatcher.start()
            log.info("runner %s started with %d workers", self.owner, self.config.workers)

    def ensure_started(self):
        """Start the runner unless it already runs in this process (cheap to call often)."""
        if self._pid != os.getpid():
            self.start()

    def alive(self):
        """True while the dispatcher and every worker thread of this process run."""
        return (
            self._pid == os.getpid()
            and self._dispatcher is not None
            and self._dispatcher.is_alive()
            and all(thread.is_alive() for thread in self._threads)
        )

    def stop(self, grace=None):
        """Stop claiming, give running tasks up to grace seconds, requeue the rest."""
        with self._lock:
            if self._pid != os.getpid() or self._dispatcher is None:
                return
            grace = self.config.shutdown_grace if grace is None else grace
            log.info("runner %s stopping: %d claimed tasks get up to %gs",
                     self.owner, len(self._active), grace)
            self._stopping.set()
            self._wake.set()
            # Bounded: a dispatcher stuck in database I/O must not hold up the exit.
            self._dispatcher.join(timeout=grace + 5)
            self._dispatcher = None
            unstarted = self._take_unstarted()
            for _ in self._threads:
                self._jobs.put(STOP)
            deadline = time.monotonic() + grace
            with self._changed:
                self._changed.wait_for(
                    lambda: not self._active and not self._reserved,
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                unfinished = list(self._active.values())
            for attempt in unfinished:
                attempt.abandoned = True
                attempt.ctx.cancel()
            released = outcomes.released(unstarted + unfinished, self.owner)
            self._upkeep.forget()
            for thread in self._threads:
                thread.join(timeout=0.5)
            self._threads = []
            self._pid = None
            submit.remove_listener(self._on_enqueued)
            log.info("runner %s stopped; %d unfinished tasks requeued", self.owner, released)

    # -- threads ------------------------------------------------------------

    def _work(self):
        """Worker thread: run attempts until told to stop."""
        with HeldConnection() as connection:
            while True:
                attempt = self._local.__dict__.pop("following", None) or self._next_job(connection)
                if attempt is None:  # STOP
                    return
                try:
                    if not attempt.abandoned:
                        run_attempt(attempt, self.owner, self.config, self._finishing)
                except Exception:  # never let one task kill the worker thread
                    log.exception("runner error in task %s", attempt.claim.id)
                finally:
                    with self._changed:
                        self._active.pop(attempt.claim.id, None)
                        self._changed.notify_all()
                    if self._dispatcher_needed():
                        self._wake.set()

    def _next_job(self, connection):
        """The next attempt for a worker; one that waits longer than IDLE_HOLD gives its connection back first.

        Not at once: under a stream of tasks the next one is usually a claim
        away, and a connection back to the pool costs a checkout (and on MySQL
        the pool's ROLLBACK, a round trip) for nothing.
        """
        try:
            return self._jobs.get(timeout=IDLE_HOLD)[1]
        except queue.Empty:
            connection.release()
            return self._jobs.get()[1]

    def _dispatch(self):
        """Dispatcher thread: claim work for idle workers and keep leases alive."""
        next_heartbeat = next_tick = 0.0
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()  # a wake-up during the work below is kept for the wait
            claimed_all = False
            try:
                claimed_all = self._claim()
                if time.monotonic() >= next_tick:
                    self._upkeep.tick()
                    next_tick = time.monotonic() + self.config.poll_interval
                if time.monotonic() >= next_heartbeat:
                    if self._upkeep.beat():
                        self._wake.set()  # tasks of a lost worker are back in the queue
                    next_heartbeat = time.monotonic() + self.config.heartbeat
                failures = 0
            except Exception:
                failures += 1
                log.exception("runner %s: database error in dispatcher", self.owner)
            finally:
                Session.remove()
            if claimed_all and not failures:
                continue  # there may be more due work right now
            timeout = self.config.poll_interval * min(2**failures, 20)
            if self._wake.wait(timeout) and self._submitted:
                # Under a stream of submits, gather a few before the next claim
                # instead of running one claim transaction per submitted task.
                # (Workers asking for more need no gap: they wake it a batch at a time.)
                self._submitted = False
                self._stopping.wait(self.config.claim_gap)

    def _claim(self):
        """Keep workers fed: claim a batch once a batch's worth of slots is free.

        Up to `prefetch` claimed tasks wait beyond the busy workers, so workers
        never wait for a claim, and one claim transaction serves several tasks.
        True if the claim got all it asked for (there may be more).
        """
        with self._claim_in(Session) as (limit, claims):
            if limit:
                Session.commit()
        return bool(limit) and len(claims) == limit

    @contextlib.contextmanager
    def _finishing(self, session):
        """Around a succeeding task's commit: start this worker's next attempt in it, and on
        SQLite also claim the next batch in it.

        Starting the next attempt there saves it a commit of its own. On SQLite
        the finishing task already holds the one write lock, so the claim there
        waits for nobody, where the dispatcher's own claim would queue behind
        the busy workers and leave them idle. Elsewhere each transaction locks
        only its own rows and the dispatcher claims; the heartbeat skips rows
        another transaction holds, so two rows here cannot deadlock with it.
        """
        following = self._take_job()
        try:
            started = following is not None and fenced.start_task(session, following.claim, self.owner)
            with self._claim_in(session) if self._inline_claims else contextlib.nullcontext():
                yield
        except BaseException:
            if following is not None:  # not started (or its start rolled back): it waits again
                self._jobs.put((following.claim.order(), following))
            raise
        if following is not None:
            if started:
                following.started = time.monotonic()
            self._local.following = following  # not started: cancelled while it waited; skipped

    def _take_job(self):
        """The next claimed attempt if one waits, without waiting (None for none, or STOP)."""
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            return None
        if job[1] is None or job[1].abandoned:  # STOP, or given up: the loop deals with it
            self._jobs.put(job)
            return None
        return job[1]

    @contextlib.contextmanager
    def _claim_in(self, session):
        """Reserve free slots and claim them in session's transaction; yield (limit, claims).

        The block commits that transaction: the claims go to the workers only if
        it ends without an exception.
        """
        limit = self._reserve()
        claims = []
        handing = False
        try:
            if limit:
                claims = self._claimer.claim(session, self.owner, limit, self.config.queues)
            if claims:
                # Held from the claim to the hand-over: a claim that commits later
                # (claims take the database's write lock in turn) reaches the
                # workers later, so one worker runs tasks exactly in claim order.
                self._handing.acquire()
                handing = True
            yield limit, claims
        except BaseException:
            claims = []
            raise
        finally:
            unwanted = []
            try:
                if limit:
                    unwanted = self._settle(limit, claims)
            finally:
                if handing:
                    self._handing.release()
            if unwanted:  # claimed while shutting down: straight back to the queue
                outcomes.released(unwanted, self.owner)

    def _dispatcher_needed(self):
        """After a task: should the dispatcher claim? (A wake-up costs a GIL switch.)

        Where finishing tasks claim in their own commit, only when the claimed
        stock is gone and a worker is about to idle.
        """
        if self._inline_claims:
            return bool(self._claimable()) and len(self._active) < self.config.workers
        return bool(self._claimable())

    def _reserve(self):
        """Hold the free slots for one claim; 0 if too few are free or we are stopping."""
        with self._changed:
            if self._stopping.is_set():
                return 0
            limit = min(self._claimable(), self.config.claim_batch)
            self._reserved += limit
            return limit

    def _settle(self, reserved, claims):
        """Give back a reservation and hand its committed claims to the workers; return
        the attempts that must go back to the queue instead (we are stopping)."""
        attempts = [Attempt(claim) for claim in claims]
        with self._changed:
            self._reserved -= reserved
            stopping = self._stopping.is_set()
            if not stopping:
                for attempt in attempts:
                    self._active[attempt.claim.id] = attempt
            self._changed.notify_all()
        if stopping:
            return attempts
        for attempt in attempts:
            self._jobs.put((attempt.claim.order(), attempt))
        return []

    def _claimable(self):
        """How many tasks to claim now: 0 until a batch's worth of slots is free.

        A batch is half the slots while the claimed stock can cover every
        worker (a claim costs about as much for 8 rows as for 4), else a
        worker's worth, or a single slot without prefetch.
        """
        workers = self.config.workers
        prefetch = 3 * workers if self.config.prefetch is None else self.config.prefetch
        slots = workers + prefetch
        batch = slots // 2 if prefetch >= workers else max(1, min(workers, prefetch))
        free = slots - len(self._active) - self._reserved
        return free if free >= batch else 0

    def _take_unstarted(self):
        """Remove claimed tasks that no worker has started yet."""
        unstarted = []
        while True:
            try:
                _, attempt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if attempt is not None:
                unstarted.append(attempt)
        with self._changed:
            for attempt in unstarted:
                self._active.pop(attempt.claim.id, None)
            self._changed.notify_all()
        return unstarted
