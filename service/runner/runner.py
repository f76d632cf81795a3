"""A bounded pool of task threads fed from the tasks table."""
import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid

from db import HeldConnection, Session, runners, session_scope, tasks
from db.models import FAILED
from service.runner.execute import Execution, run_execution
from service import metrics
from service.runner import manage
from service.runner.housekeeping import keep_tables
from service.runner.submit import Backlog, add_task

log = logging.getLogger(__name__)

STOP = None  # sentinel that tells a worker thread to exit


class Runner:
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
        self._backlog = Backlog(config.max_queued)

    # -- submitting -------------------------------------------------------

    def enqueue(self, name, args, **options):
        """Validate and commit a new task with the thread's Session, then wake a worker.

        Returns the task row. It is committed before any worker can see it.
        """
        task = add_task(Session, name, args, self._backlog, **options)
        Session.commit()
        self._backlog.added()
        metrics.SUBMITTED.labels(name).inc()
        self.wake()
        return task

    def retry(self, task_id):
        """Queue and commit a retry of a failed or cancelled task (service.runner.manage); None if unknown."""
        task = manage.retry_task(Session, task_id, self._backlog)
        if task is not None:
            Session.commit()
            metrics.RETRIED.labels(task.name).inc()
            metrics.SUBMITTED.labels(task.name).inc()
            self.wake()
        return task

    def retry_matching(self, **filter):
        """Retry the failed/cancelled tasks a list filter matches; return (matched, retried)."""
        matched, retried = manage.retry_matching(Session, self._backlog, **filter)
        if retried:
            self.wake()
        return matched, retried

    def wake(self):
        """Tell the dispatcher there may be new work (it also polls on its own)."""
        if self._dispatcher is not None:
            self._submitted = True
            self._wake.set()

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
            self._jobs = queue.SimpleQueue()
            self._active = {}  # task id -> Execution, claimed by this process
            self._reserved = 0  # slots held for claims still in their transaction
            self._busy = 0  # workers running a task now
            self._lock_busy = threading.Lock()
            metrics.set_workers(0, self.config.workers)
            with session_scope() as session:  # not the caller's registry Session
                self._inline_claims = tasks.one_writer(session)
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
            for execution in unfinished:
                execution.abandoned = True
                execution.ctx.cancel()
            released = self._release(unstarted + unfinished)
            self._forget()
            for thread in self._threads:
                thread.join(timeout=0.5)
            self._threads = []
            self._pid = None
            log.info("runner %s stopped; %d unfinished tasks requeued", self.owner, released)

    # -- threads ------------------------------------------------------------

    def _work(self):
        """Worker thread: run executions until told to stop."""
        with HeldConnection() as connection:
            while True:
                execution = self._next_job(connection)
                if execution is STOP:
                    return
                self._count_busy(+1)
                try:
                    if not execution.abandoned:
                        run_execution(execution, self.owner, self.config, self._claiming_with)
                except Exception:  # never let one task kill the worker thread
                    log.exception("runner error in task %s", execution.claim.id)
                finally:
                    self._count_busy(-1)
                    with self._changed:
                        self._active.pop(execution.claim.id, None)
                        self._changed.notify_all()
                    if self._dispatcher_needed():
                        self._wake.set()

    def _count_busy(self, change):
        """Keep the busy/idle workers gauge of this process."""
        with self._lock_busy:
            self._busy += change
            metrics.set_workers(self._busy, self.config.workers - self._busy)

    def _next_job(self, connection):
        """The next execution for a worker; one with nothing waiting gives its connection back first."""
        try:
            return self._jobs.get_nowait()
        except queue.Empty:
            connection.release()
            return self._jobs.get()

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
                    self._enforce_time_limits()
                    self._save_progress()
                    next_tick = time.monotonic() + self.config.poll_interval
                if time.monotonic() >= next_heartbeat:
                    self._maintain()
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
    def _claiming_with(self, session):
        """Around a finishing task's commit: on SQLite, claim the next batch in it.

        The finishing task already holds SQLite's one write lock, so this claim
        waits for nobody, where the dispatcher's own claim would queue behind
        the busy workers and leave them idle.
        """
        if not self._inline_claims:
            yield
            return
        with self._claim_in(session):
            yield

    @contextlib.contextmanager
    def _claim_in(self, session):
        """Reserve free slots and claim them in session's transaction; yield (limit, claims).

        The block commits that transaction: the claims go to the workers only if
        it ends without an exception.
        """
        limit = self._reserve()
        claims = []
        try:
            if limit:
                claims = tasks.claim_tasks(session, self.owner, limit)
            yield limit, claims
        except BaseException:
            claims = []
            raise
        finally:
            if limit:
                self._settle(limit, claims)

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
        """Give back a reservation and hand its committed claims to the workers."""
        executions = [Execution(claim) for claim in claims]
        with self._changed:
            self._reserved -= reserved
            stopping = self._stopping.is_set()
            if not stopping:
                for execution in executions:
                    self._active[execution.claim.id] = execution
            self._changed.notify_all()
        if stopping:  # claimed while shutting down: straight back to the queue
            self._release(executions)
            return
        for execution in executions:
            self._jobs.put(execution)

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

    def _enforce_time_limits(self):
        """Signal tasks past their time limit; fail those that ignore it past the grace."""
        now = time.monotonic()
        for execution in list(self._active.values()):
            if execution.abandoned or not execution.past_time_limit(now):
                continue
            execution.ctx.cancel()
            if execution.past_time_limit(now, self.config.time_limit_grace):
                execution.abandoned = True
                claim = execution.claim
                with session_scope() as session:
                    message = f"time limit of {claim.time_limit:g}s exceeded"
                    failed = tasks.finish_task(session, claim, self.owner, FAILED, error=message)
                if failed:
                    metrics.FAILED.labels(claim.name).inc()
                log.error("task %s (%s) exceeded its time limit; result will be discarded",
                          claim.id, claim.name)

    def _save_progress(self):
        """Write the progress that tasks reported since the last tick."""
        pending = []
        for execution in list(self._active.values()):
            progress = execution.ctx.take_progress()
            if progress is not None and not execution.abandoned:
                pending.append((execution.claim, progress))
        if pending:
            with session_scope() as session:
                for claim, (percent, message) in pending:
                    tasks.save_progress(session, claim, self.owner, percent, message)

    def _maintain(self):
        """Refresh our leases, pick up cancel requests, recover expired leases."""
        mine = [ex for ex in list(self._active.values()) if not ex.abandoned]
        ids = [ex.claim.id for ex in mine]
        busy = sum(1 for ex in mine if ex.started is not None)
        with session_scope() as session:
            tasks.heartbeat(session, self.owner, ids)
            runners.record_runner(session, self.owner, socket.gethostname(), os.getpid(),
                                  self.config.workers, busy)
            cancelled = tasks.cancel_requested_ids(session, ids)
            requeued, failed = tasks.recover_expired(session, self.config.lease)
        for execution in mine:
            if execution.claim.id in cancelled:
                execution.ctx.cancel()
        if requeued or failed:
            log.warning("recovered tasks of lost workers: %d requeued, %d failed", requeued, failed)
            self._wake.set()
        keep_tables(self.config.retention)

    def _take_unstarted(self):
        """Remove claimed tasks that no worker has started yet."""
        unstarted = []
        while True:
            try:
                execution = self._jobs.get_nowait()
            except queue.Empty:
                break
            unstarted.append(execution)
        with self._changed:
            for execution in unstarted:
                self._active.pop(execution.claim.id, None)
            self._changed.notify_all()
        return unstarted

    def _forget(self):
        """Take this runner off the list of live processes (a lost one stays, shown as lost)."""
        try:
            with session_scope() as session:
                runners.forget_runner(session, self.owner)
        except Exception:
            log.warning("could not remove runner %s from the runners table", self.owner, exc_info=True)

    def _release(self, executions):
        """Requeue executions cut short by shutdown; they do not count as attempts."""
        released = 0
        try:
            with session_scope() as session:
                for execution in executions:
                    released += tasks.release_task(session, execution.claim, self.owner)
        except Exception:
            log.exception("could not requeue %d tasks; their leases will expire", len(executions))
        return released
