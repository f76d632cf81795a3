"""What every process that runs tasks keeps, whichever executor feeds it.

Its owner id (host:pid:random, new at each start, so a forked child never
passes for its parent), the attempts it holds (claimed, running or about to),
their upkeep (service.runner.upkeep), the announcement it makes after each
commit that queued tasks (a local wake-up, a datagram to other processes, a
Celery publish: one task_rows.on_commit listener), and giving back what it holds
when it stops. The thread pool (service.runner.threads) and the Celery worker
(service.celery_worker) each keep one per process.
"""
import os
import socket
import threading
import time
import uuid

from service.runner import outcomes, task_rows
from service.runner.upkeep import Upkeep


def new_owner():
    """A fresh owner id for this process: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunnerProcess:
    """One process's owner id, held attempts, upkeep and after-commit announcement."""

    def __init__(self, config, announce):
        self.config = config
        self.owner = new_owner()
        self.pid = os.getpid()
        self.changed = threading.Condition()  # over the held attempts; notified at each change
        self._attempts = {}  # task id -> Attempt
        self._announce = announce  # called with [Enqueued] after each commit that queued tasks
        self.upkeep = Upkeep(self.owner, config, self.held)
        self._next_tick = self._next_beat = 0.0
        task_rows.on_commit(announce)

    def held(self):
        """The attempts this process holds now."""
        with self.changed:
            return list(self._attempts.values())

    def holds(self, task_id):
        """True while this process holds an attempt of task_id."""
        with self.changed:
            return task_id in self._attempts

    def hold(self, attempts):
        """Hold these attempts (just claimed)."""
        with self.changed:
            self._attempts.update((attempt.claim.id, attempt) for attempt in attempts)
            self.changed.notify_all()

    def drop(self, attempt):
        """Stop holding an attempt (it ended, or went back to the queue)."""
        with self.changed:
            if self._attempts.get(attempt.claim.id) is attempt:
                del self._attempts[attempt.claim.id]
            self.changed.notify_all()

    def count(self):
        """How many attempts this process holds now."""
        return len(self._attempts)

    def upkeep_step(self):
        """The upkeep that is due: time limits and progress each poll interval, leases each
        heartbeat. True when tasks of a lost process went back to the queue."""
        requeued = False
        if time.monotonic() >= self._next_tick:
            self.upkeep.tick()
            self._next_tick = time.monotonic() + self.config.poll_interval
        if time.monotonic() >= self._next_beat:
            requeued = self.upkeep.beat()
            self._next_beat = time.monotonic() + self.config.heartbeat
        return requeued

    def release(self, attempts):
        """Give back attempts that stop or never started here; they do not count. How many were."""
        released = outcomes.released(attempts, self.owner)
        for attempt in attempts:
            self.drop(attempt)
        return released

    def close(self):
        """No more announcements; the runners table forgets this process."""
        task_rows.remove_listener(self._announce)
        self.upkeep.forget()
