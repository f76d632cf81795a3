"""The Celery executor: a broker carries task ids, the tasks table stays the record.

Web side (CeleryExecutor): after a commit that queued tasks, their ids are
published to the task queue; a publish that fails is left to a relay. Worker
side (`celery -A service.runner.celery worker`, make celery-worker): the one
Celery task, run_tasks(ids), claims its rows with the same fenced, conditional
UPDATE as the thread pool (only queued, due rows), runs each through
service.runner.attempt (the task's writes commit with its final status,
Session.remove() after it on every path) and keeps leases alive like the
thread pool does (service.runner.upkeep). There is no result backend and no
Flask app context: the row is the result.

Each worker's main process runs a relay: every second it publishes queued,
due rows that were never published (the publisher died between commit and
publish, the broker was down, the task was delayed or retried: delays live in
the table, never as Celery ETAs), and again those published long ago but never
claimed (a broker that lost its messages). Any number of relays may run; a
duplicate delivery claims nothing. acks_late and reject_on_worker_lost put
back the message of a worker that died; its row comes back after its lease.
"""
import logging
import os
import socket
import threading
import time
import uuid

from celery import Celery, signals
from kombu import Queue
from kombu.transport import redis as kombu_redis

import db
from db import HeldConnection, delivery, session_scope
from db.models import Task, utcnow
from service import logs
from service.config import load_config
from service.runner import submit
from service.runner.attempt import Attempt, run_attempt
from service.runner.config import RunnerConfig
from service.runner.executor import Executor
from service.runner.registry import load_task_modules
from service.runner.upkeep import Upkeep

log = logging.getLogger(__name__)

QUEUE = "tasks"  # the Celery queue every task's id goes to
RELAY_INTERVAL = 1.0  # seconds between a relay's looks for rows to publish
RELAY_GRACE = 2.0  # seconds a due, unpublished row is left to its own publisher first
RELAY_BATCH = 500
MESSAGE_BATCH = 16  # ids one message carries at most: tasks committed together, claimed together
BROKER_CHECK_EVERY = 5.0  # seconds /readyz trusts its last look at the broker

app = Celery("service")
app.conf.update(
    task_acks_late=True,  # a message is acknowledged after its task ran, not when received
    task_reject_on_worker_lost=True,  # and put back if the worker process died meanwhile
    task_ignore_result=True,  # no result backend: the row is the result
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE)],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_connection_timeout=2,
    broker_transport_options={
        # Redis only: a message unacknowledged this long is delivered again. Tasks are
        # published when due (no ETAs), and a second delivery of a running task claims nothing.
        "visibility_timeout": 3600,
        # A publisher facing a broker that is down gives up in a second, not six: the row is
        # committed, and the relay publishes it once the broker is back.
        "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
    },
)


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, minus putting back unacknowledged messages when it closes.

    When the broker goes away, closing the channel tries to put them back through
    the connection that just closed: kombu 5.7 raises AttributeError there and the
    Celery worker exits ("Unrecoverable error"). Here nothing needs putting back:
    a message that is lost is published again by a relay, from the table.
    """

    do_restore = False


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel


def configure(config):
    """Point the app at CELERY_BROKER_URL (dropping connections made to another one)."""
    if app.conf.broker_url != config.broker_url:
        app.conf.broker_url = config.broker_url
        redis = config.broker_url.startswith(("redis://", "rediss://"))
        app.conf.broker_transport = f"{__name__}:RedisTransport" if redis else None
        app._after_fork()  # Celery's own reset of its connection and producer pools


@app.task(name="service.run_tasks", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_tasks(task_ids):
    """Claim these tasks by id and run those that are ours, one after another (a Celery worker runs this)."""
    WorkerProcess.here().run(task_ids)


def publish(task_ids):
    """Hand these ids to the broker, up to MESSAGE_BATCH a message; raise if it cannot be reached.

    Tasks committed together travel together: one message, one claim, one
    connection for all of them, where Celery's own cost per message would
    otherwise be most of a short task's.
    """
    with app.producer_or_acquire() as producer:
        for start in range(0, len(task_ids), MESSAGE_BATCH):
            run_tasks.apply_async(args=[task_ids[start:start + MESSAGE_BATCH]], queue=QUEUE,
                                  producer=producer, retry=False)


class CeleryExecutor(Executor):
    """In a web (or any submitting) process: publish the ids of committed tasks."""

    def __init__(self, config):
        self.config = config
        self.owner = None
        self._pid = None
        self._checked = (0.0, {})  # (when, problems) of the last look at the broker
        configure(config)

    def start(self):
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:publisher"
        submit.on_commit(self._publish_committed)

    def ensure_started(self):
        if self._pid != os.getpid():
            self.start()

    def alive(self):
        return self._pid == os.getpid()

    def stop(self, grace=None):
        submit.remove_listener(self._publish_committed)
        self._pid = None

    def problems(self):
        """The broker must answer too (checked at most every few seconds)."""
        when, problems = self._checked
        if time.monotonic() - when > BROKER_CHECK_EVERY:
            problems = {}
            try:
                with app.connection_for_write() as connection:
                    connection.ensure_connection(max_retries=1, timeout=2)
            except Exception as error:
                problems = {"broker": f"unreachable: {type(error).__name__}"}
            self._checked = (time.monotonic(), problems)
        return {**super().problems(), **problems}

    def _publish_committed(self, added):
        """After the commit: publish what is due now; the rest (and any failure) is the relay's."""
        now = utcnow()
        due = [task.id for task in added if task.run_after is None or task.run_after <= now]
        if not due:
            return
        try:
            publish(due)
        except Exception as error:
            log.warning("could not publish tasks %s (%s); a relay will", due, error)
            return
        with session_scope() as session:
            delivery.mark_published(session, due)


class WorkerProcess:
    """One OS process of a Celery worker: its settings, engine, running attempts and upkeep."""

    _current = None

    @classmethod
    def here(cls):
        """This process's WorkerProcess, made on the first task it runs (after any fork)."""
        if cls._current is None or cls._current.pid != os.getpid():
            cls._current = cls(workers=_pool_size())
        return cls._current

    def __init__(self, workers):
        settings = _settings()
        self.pid = os.getpid()
        self.config = RunnerConfig.from_settings({**settings, "TASK_WORKERS": workers})
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.attempts = {}  # task id -> Attempt running in this process
        self.lock = threading.Lock()
        self.upkeep = Upkeep(self.owner, self.config, self.held)
        threading.Thread(target=self.keep, name="task-upkeep", daemon=True).start()
        log.info("celery worker process %s runs tasks", self.owner)

    def held(self):
        with self.lock:
            return list(self.attempts.values())

    def run(self, task_ids):
        """Claim the rows (committed before any runs) and run those that are ours, in order."""
        with session_scope() as session:
            claims = delivery.claim_tasks(session, task_ids, self.owner)
        if len(claims) < len(task_ids):
            log.debug("of tasks %s only %d were queued and due: the rest ignored", task_ids, len(claims))
        attempts = [Attempt(claim) for claim in claims]
        with self.lock:
            self.attempts.update((attempt.claim.id, attempt) for attempt in attempts)
        with HeldConnection():  # one connection for the batch: no checkout or ping per task
            for attempt in attempts:
                try:
                    run_attempt(attempt, self.owner, self.config)
                finally:
                    with self.lock:
                        self.attempts.pop(attempt.claim.id, None)

    def keep(self):
        """Upkeep thread: time limits and progress each poll interval, leases each heartbeat."""
        next_beat = 0.0
        while True:
            try:
                self.upkeep.tick()
                if time.monotonic() >= next_beat:
                    self.upkeep.beat()
                    next_beat = time.monotonic() + self.config.heartbeat
            except Exception:
                log.exception("celery worker process %s: database error in upkeep", self.owner)
            time.sleep(self.config.poll_interval)


def relay(stop, republish_after):
    """Relay thread of a worker's main process: publish what was never (or long ago) published."""
    while not stop.wait(RELAY_INTERVAL):
        try:
            while True:
                with session_scope() as session:
                    rows = delivery.take_unpublished(session, RELAY_BATCH, republish_after, RELAY_GRACE)
                if rows:
                    _relay(rows)
                if len(rows) < RELAY_BATCH:
                    break
        except Exception:
            log.exception("relay: could not look for unpublished tasks")


def _relay(rows):
    ids = [task_id for task_id, _ in rows]
    try:
        publish(ids)
        log.info("relay published %d tasks", len(ids))
    except Exception as error:
        log.warning("relay could not publish %d tasks (%s); trying again shortly", len(ids), error)
        with session_scope() as session:  # not published after all: the next look takes them
            session.execute(Task.__table__.update().where(Task.id.in_(ids)).values(published_at=None))


_state = {}  # what worker_init learned: the settings and the pool's size


def _settings():
    if "settings" not in _state:
        _start_process(load_config(os.environ))
    return _state["settings"]


def _pool_size():
    """Tasks one process runs at once: the pool's size in a threads pool, one in a prefork child."""
    if _state.get("main_pid") not in (None, os.getpid()):
        return 1
    return _state.get("concurrency") or 1


def _start_process(settings):
    """Logging, the engine and the submit bound for this process (the signals call it)."""
    _state["settings"] = settings
    logs.configure(settings)
    submit.configure(settings["TASK_MAX_QUEUED"])
    workers = settings["TASK_WORKERS"] or 1
    db.init_engine(settings["DATABASE_URL"], pool_size=workers + 2, max_overflow=workers + 2)
    configure(RunnerConfig.from_settings(settings))


@signals.worker_init.connect
def _worker_init(sender=None, **kwargs):
    """The worker's main process, before its pool starts: settings, engine, the relay."""
    settings = load_config(os.environ)
    load_task_modules(settings)
    _start_process(settings)
    _state["main_pid"] = os.getpid()
    _state["concurrency"] = getattr(sender, "concurrency", None)
    stop = threading.Event()
    _state["relay_stop"] = stop
    threading.Thread(target=relay, args=(stop, settings["CELERY_REPUBLISH_AFTER"]), name="task-relay",
                     daemon=True).start()


@signals.worker_process_init.connect
def _worker_process_init(**kwargs):
    """A prefork child: never share the parent's pooled connections."""
    db.get_engine().dispose(close=False)


@signals.worker_shutdown.connect
def _worker_shutdown(**kwargs):
    """A clean stop: the relay ends, and this process leaves the runners table."""
    stop = _state.get("relay_stop")
    if stop is not None:
        stop.set()
    _worker_process_shutdown()


@signals.worker_process_shutdown.connect
def _worker_process_shutdown(**kwargs):
    current = WorkerProcess._current
    if current is not None and current.pid == os.getpid():
        current.upkeep.forget()
