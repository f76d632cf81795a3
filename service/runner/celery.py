"""The Celery executor: a broker carries task ids, the tasks table stays the record.

This module is the Celery app (`celery -A service.runner.celery worker`) and
the publishing side: after a commit that queued tasks, CeleryExecutor publishes
their ids; a publish that fails is left to a relay. The worker side (the one
task, claiming, running, upkeep, the relay) is service.celery_worker,
which Celery imports in a worker only (`include`), before its worker_init
signal; publishing sends the task by its name. There is no result backend and
no Flask app context: the row is the result.
"""
import logging
import os
import socket
import threading
import time

from celery import Celery
from kombu import Queue
from kombu.transport import redis as kombu_redis

from db import publishing, session_scope
from db.models import DEFAULT_QUEUE, utcnow
from service.runner import task_rows
from service.runner.executor import Executor

log = logging.getLogger(__name__)

RUN_TASKS = "service.run_tasks"  # the one Celery task: claim these ids and run them
MESSAGE_BATCH = 16  # ids one message carries at most: tasks committed together, claimed together
BROKER_CHECK_EVERY = 5.0  # seconds /readyz trusts its last look at the broker

# Only a worker imports what `include` names: a publisher never loads the worker side.
app = Celery("service", include=["service.celery_worker"])
app.conf.update(
    task_acks_late=True,  # a message is acknowledged after its task ran, not when received
    task_reject_on_worker_lost=True,  # and put back if the worker process died meanwhile
    task_ignore_result=True,  # no result backend: the row is the result
    worker_prefetch_multiplier=1,
    task_default_queue=DEFAULT_QUEUE,  # a task's queue is the Celery queue of the same name
    task_queues=[Queue(DEFAULT_QUEUE)],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_connection_timeout=2,
    broker_transport_options={
        "socket_timeout": 5,  # a broker that stops answering must not hold a request thread
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


def publish(tasks):
    """Hand these (id, queue) pairs' ids to the broker, each to the Celery queue of its task's
    queue, up to MESSAGE_BATCH a message; raise if it cannot be reached.

    Tasks committed together travel together: one message, one claim, one
    connection for all of them, where Celery's own cost per message would
    otherwise be most of a short task's.
    """
    by_queue = {}
    for task_id, queue in tasks:
        by_queue.setdefault(queue, []).append(task_id)
    with app.producer_or_acquire() as producer:
        for queue, task_ids in by_queue.items():
            for start in range(0, len(task_ids), MESSAGE_BATCH):
                app.send_task(RUN_TASKS, args=[task_ids[start:start + MESSAGE_BATCH]], queue=queue,
                              producer=producer, retry=False, ignore_result=True)


def serve(queues):
    """Make a worker consume from these Celery queues (its TASK_QUEUES, or every registered queue)."""
    app.amqp.queues.select(list(queues))


class CeleryExecutor(Executor):
    """In a web (or any submitting) process: publish the ids of committed tasks."""

    def __init__(self, config):
        self.config = config
        self.owner = None
        self._pid = None
        self._checked = (0.0, {})  # (when, problems) of the last look at the broker
        self._lock = threading.Lock()
        configure(config)

    def start(self):
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.owner = f"{socket.gethostname()}:{os.getpid()}:publisher"
            task_rows.on_commit(publish_committed)

    def ensure_started(self):
        if self._pid != os.getpid():
            self.start()

    def alive(self):
        return self._pid == os.getpid()

    def stop(self, grace=None):
        task_rows.remove_listener(publish_committed)
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


def publish_committed(added):
    """After a commit: publish the ids of what is due now; the rest (and any failure) is a relay's.
    Fair tasks too are a relay's: it hands them over in their turn, a few at a time.

    The rows are marked published first, so that a fast task requeued meanwhile
    comes back unmarked; a publish that fails unmarks them again.
    """
    now = utcnow()
    due = [(task.id, task.queue) for task in added
           if not task.fair and (task.run_after is None or task.run_after <= now)]
    if not due:
        return
    ids = [task_id for task_id, _ in due]
    with session_scope() as session:
        publishing.mark_published(session, ids)
    try:
        publish(due)
    except Exception as error:
        log.warning("could not publish tasks %s (%s); a relay will", ids, error)
        with session_scope() as session:
            publishing.unmark_published(session, ids)
