"""The worker side of the Celery executor: each process that runs tasks, its upkeep and relay.

A WorkerProcess is made in every process that runs tasks (the main process
with the threads or solo pool, each child with prefork), as soon as it
starts: it claims the rows of the ids it is handed with the same fenced,
conditional UPDATE as the thread pool (only queued, due rows, never one it
already runs), runs each through service.runner.attempt (the task's writes
commit with its final status, Session.remove() after it on every path), and
keeps an upkeep thread (leases, time limits, progress, cancel flags, lost
leases, counts) and a relay thread. Nothing starts threads in a process that
forks later (the prefork parent).

The relay publishes, every second, queued and due rows that were never
published (the broker was down at submit, the publisher died between commit
and publish, the task was delayed or retried: delays live in the table, never
as Celery ETAs) and, while the broker's queue is empty, those published more
than CELERY_REPUBLISH_AFTER ago and still not claimed (a broker that lost its
messages). Any number of relays may run; a duplicate delivery claims nothing.
"""
import contextlib
import logging
import os
import threading
import time

from amqp.exceptions import ChannelError
from celery import signals

import db
from db import HeldConnection, Session, claims, publishing, session_scope
from service import startup
from service.config import refuse_in_one_line
from service.runner import outcomes
from service.runner.attempt import Attempt, run_attempt
from service.runner.celery import RUN_TASKS, app, configure, publish, publish_committed, serve
from service.runner.config import RunnerConfig
from service.runner.process import RunnerProcess
from service.runner.registry import registry

log = logging.getLogger(__name__)

RELAY_INTERVAL = 1.0  # seconds between a relay's looks for rows to publish
RELAY_GRACE = 2.0  # seconds a due, unpublished row is left to its own publisher first
RELAY_BATCH = 500
FAIR_RELAY_INTERVAL = 0.05  # seconds between looks while fair tasks wait (publishing.FAIR_AHEAD go out at once)

_state = {}  # what the signals learned: the settings, the main process, the pool's size

# Celery imports this module in a worker only, before its signals: a bad setting stops the
# worker here with one line (a signal handler's error is logged, and the worker runs on).
with refuse_in_one_line():
    startup.settings_from_environment()


class WorkerProcess:
    """One OS process of a Celery worker that runs tasks: its attempts, upkeep and relay."""

    _current = None
    _making = threading.Lock()

    @classmethod
    def here(cls):
        """This process's WorkerProcess (made once per process, after any fork)."""
        with cls._making:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls(workers=_pool_size())
            return cls._current

    def __init__(self, workers):
        settings = _settings()
        self.pid = os.getpid()
        self.config = RunnerConfig.from_settings({**settings, "TASK_WORKERS": workers})
        # Tasks that tasks submit go out at once.
        self.process = RunnerProcess(self.config, announce=publish_committed)
        self.owner = self.process.owner
        self.stopping = threading.Event()
        threading.Thread(target=self.keep, name="task-upkeep", daemon=True).start()
        threading.Thread(target=self.relay, name="task-relay", daemon=True).start()
        log.info("celery worker process %s runs tasks (%d at once)", self.owner, workers)

    def run(self, task_ids):
        """Claim the rows (committed before any runs) and run those that are ours, in order.

        A claimed row that does not get to run (an error between tasks) goes
        straight back to the queue, its attempt not counted.
        """
        task_ids = [task_id for task_id in task_ids if not self.process.holds(task_id)]
        if not task_ids:
            return
        with session_scope() as session:
            taken = claims.claim_delivered(session, task_ids, self.owner)
        attempts = [Attempt(claim) for claim in taken]
        self.process.hold(attempts)
        unstarted = list(attempts)
        try:
            with HeldConnection():  # one connection for the batch: no checkout or ping per task
                while unstarted:
                    attempt = unstarted.pop(0)
                    try:
                        if run_attempt(attempt, self.owner, self.config):
                            with outcomes.committing_success(attempt, self.owner, self.config):
                                Session.commit()
                    finally:
                        self.process.drop(attempt)
        finally:
            if unstarted:
                self.process.release(unstarted)

    def keep(self):
        """Upkeep thread: time limits and progress each poll interval, leases each heartbeat."""
        while not self.stopping.wait(self.config.poll_interval):
            try:
                self.process.upkeep_step()
            except Exception:
                log.exception("celery worker process %s: database error in upkeep", self.owner)

    def relay(self):
        """Relay thread: publish what was never published, or long ago and still waits; while
        fair tasks wait, look every FAIR_RELAY_INTERVAL to hand over their next turns."""
        wait, looked = RELAY_INTERVAL, -float("inf")
        while not self.stopping.wait(wait):
            try:
                republish_after = None
                if time.monotonic() - looked >= RELAY_INTERVAL:  # the broker's depth: once an interval
                    looked = time.monotonic()
                    republish_after = None if _queue_depth() else self.config.republish_after
                while relay_once(republish_after) == RELAY_BATCH:
                    pass
                with session_scope() as session:
                    wait = FAIR_RELAY_INTERVAL if publishing.fair_waiting(session) else RELAY_INTERVAL
            except Exception:
                wait = RELAY_INTERVAL
                log.exception("relay: could not look for unpublished tasks")

    def stop(self):
        """A clean stop: threads end, unstarted claims go back, the runners table forgets us."""
        self.stopping.set()
        self.process.close()


@app.task(name=RUN_TASKS, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_tasks(task_ids):
    """Claim these tasks by id and run those that are ours, one after another."""
    WorkerProcess.here().run(task_ids)


def relay_once(republish_after):
    """Publish one batch of rows that need it; return how many were taken (0 after a failed publish)."""
    with session_scope() as session:
        rows = publishing.take_unpublished(session, RELAY_BATCH, republish_after, RELAY_GRACE)
    if not rows:
        return 0
    ids = [task_id for task_id, _ in rows]
    try:
        publish(rows)
    except Exception as error:
        log.warning("relay could not publish %d tasks (%s); trying again shortly", len(ids), error)
        with session_scope() as session:  # not published after all: the next look takes them
            publishing.unmark_published(session, ids)
        return 0
    log.info("relay published %d tasks", len(ids))
    return len(rows)


def _queue_depth():
    """Messages waiting in the broker's task queues: while there are, an unclaimed row is likely among them."""
    depth = 0
    with app.connection_for_write() as connection:
        for queue in registry.queues():
            channel = connection.channel()  # one each: on AMQP a missing queue closes its channel
            try:
                depth += channel.queue_declare(queue, passive=True).message_count
            except ChannelError:  # no such queue: on Redis, an empty one
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depth


def _settings():
    if "settings" not in _state:
        _start_process(startup.settings_from_environment(), concurrency=None)
    return _state["settings"]


def _pool_size():
    """Tasks one process runs at once: the pool's size in the main process, one in a prefork child."""
    if _state.get("main_pid") not in (None, os.getpid()):
        return 1
    return _state.get("concurrency") or 1


def _start_process(settings, concurrency):
    """The start-up (the engine sized for the pool) and the broker, for this worker."""
    _state["settings"] = settings
    # A held connection per pool thread, plus claims, upkeep and the relay; it writes
    # beside the server whose processes submit.
    connections = (concurrency or settings["TASK_WORKERS"] or 1) + 4
    startup.start(settings, connections, writers=startup.server_writers(settings) + 1)
    configure(RunnerConfig.from_settings(settings))
    serve(settings["TASK_QUEUES"] or registry.queues())


@signals.worker_init.connect
def _worker_init(sender=None, **kwargs):
    """The worker's main process, before its pool starts: settings, task modules, the engine."""
    _state["main_pid"] = os.getpid()
    _state["concurrency"] = getattr(sender, "concurrency", None)
    pool = getattr(sender, "pool_cls", "")
    _state["prefork"] = "prefork" in getattr(pool, "__module__", str(pool))
    _start_process(startup.settings_from_environment(), _state["concurrency"])


@signals.worker_ready.connect
def _worker_ready(sender=None, **kwargs):
    """With the threads or solo pool the main process runs the tasks: start its WorkerProcess now,
    so leases of dead workers are taken back even before the first task comes."""
    if not _state.get("prefork"):
        WorkerProcess.here()


@signals.worker_process_init.connect
def _worker_process_init(**kwargs):
    """A prefork child: never share the parent's pooled connections; start its WorkerProcess."""
    db.get_engine().dispose(close=False)
    WorkerProcess.here()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _worker_stopped(**kwargs):
    current = WorkerProcess._current
    if current is not None and current.pid == os.getpid():
        current.stop()
