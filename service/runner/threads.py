"""The thread-pool executor: a bounded pool of task threads fed from the tasks table.

A dispatcher thread (service.runner.dispatch) claims due rows, a batch at a
time and fenced so two processes never take the same row, for a fixed number
of worker threads, and keeps this process's upkeep; tasks submitted in this
process wake it after their commit. Each worker thread runs one attempt at a
time and commits a success together with the start of its next attempt.
"""
import logging
import os
import threading
import time

from db import HeldConnection, Session, listen_for_queued
from service import metrics
from service.runner import outcomes
from service.runner.attempt import run_attempt
from service.runner.dispatch import Dispatcher
from service.runner.executor import Executor
from service.runner.jobs import Jobs
from service.runner.process import RunnerProcess

log = logging.getLogger(__name__)


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
        self._dispatcher = None  # the Dispatcher while running here
        self._dispatching = None  # its thread
        self._listener = None  # what wakes it when another process queues tasks (PostgreSQL)

    def runs_here(self):
        return self.config.workers > 0

    def wake(self):
        """Tell the dispatcher there may be new work (it also polls on its own)."""
        if self._dispatching is not None:
            self._dispatcher.wake(submitted=True)

    def held(self):
        """The attempts this process holds now (claimed, running or about to)."""
        return self._process.held() if self._dispatching is not None else []

    def start(self):
        """Start the dispatcher and worker threads in this process if not running."""
        with self._lock:
            if self._pid == os.getpid() and self.alive():
                return
            if self._listener is not None and self._pid == os.getpid():  # a runner that died here
                self._listener.stop()
            self._pid = os.getpid()
            self._stopping = threading.Event()
            self._jobs = Jobs()
            metrics.set_workers(0, self.config.workers)
            # After a commit in this process queued tasks: claim them soon.
            self._process = RunnerProcess(self.config, announce=lambda added: self.wake())
            self.owner = self._process.owner
            self._dispatcher = Dispatcher(self.config, self._process, self._jobs, self._stopping)
            self._threads = [threading.Thread(target=self._work, name=f"task-worker-{n}", daemon=True)
                             for n in range(self.config.workers)]
            self._dispatching = threading.Thread(target=self._dispatcher.run, name="task-dispatcher",
                                                 daemon=True)
            for thread in self._threads:
                thread.start()
            self._dispatching.start()
            # Tasks queued by other processes, on any host: claimed at once, not at the next poll.
            self._listener = listen_for_queued(self.wake)
            log.info("runner %s started with %d workers", self.owner, self.config.workers)

    def ensure_started(self):
        """Start the runner unless it already runs in this process (cheap to call often)."""
        if self._pid != os.getpid():
            self.start()

    def alive(self):
        """True while the dispatcher and every worker thread of this process run."""
        return (self._pid == os.getpid() and self._dispatching is not None
                and self._dispatching.is_alive() and all(thread.is_alive() for thread in self._threads))

    def stop(self, grace=None):
        """Stop claiming, give running tasks up to grace seconds, requeue the rest."""
        with self._lock:
            if self._pid != os.getpid() or self._dispatching is None:
                return
            grace = self.config.shutdown_grace if grace is None else grace
            process = self._process
            log.info("runner %s stopping: %d claimed tasks get up to %gs", self.owner, process.count(), grace)
            self._stopping.set()
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
            self._dispatcher.wake()
            # Bounded: a dispatcher stuck in database I/O must not hold up the exit.
            self._dispatching.join(timeout=grace + 5)
            self._dispatching = None
            unstarted = self._jobs.take_all()
            for attempt in unstarted:
                process.drop(attempt)
            self._jobs.stop_workers(len(self._threads))
            deadline = time.monotonic() + grace
            with process.changed:
                process.changed.wait_for(lambda: not process.count() and not self._dispatcher.reserved,
                                         timeout=max(0.0, deadline - time.monotonic()))
                unfinished = process.held()
            for attempt in unfinished:
                attempt.abandoned = True
                attempt.ctx.cancel()
            released = process.release(unstarted + unfinished)
            process.close()
            for thread in self._threads:
                thread.join(timeout=0.5)
            self._threads = []
            self._pid = None
            log.info("runner %s stopped; %d unfinished tasks requeued", self.owner, released)

    def _work(self):
        """Worker thread: run attempts until told to stop."""
        following = None
        with HeldConnection() as connection:
            while True:
                attempt = following or self._jobs.next(connection)
                following = None
                if attempt is None:  # stop
                    return
                try:
                    if not attempt.abandoned:
                        following = self._run(attempt)
                except Exception:  # never let one task kill the worker thread
                    log.exception("runner error in task %s", attempt.claim.id)
                finally:
                    self._process.drop(attempt)
                    if self._dispatcher.needed():
                        self._dispatcher.wake()

    def _run(self, attempt):
        """Run one attempt; commit a success with this worker's next attempt started in the same
        commit (and on SQLite the next claims). Return that next attempt, if one was waiting."""
        if not run_attempt(attempt, self.owner, self.config):
            return None
        after = []
        with outcomes.committing_success(attempt, self.owner, self.config):
            with self._dispatcher.finishing(Session) as after:
                Session.commit()
        return after[0] if after else None
