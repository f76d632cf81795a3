"""The thread pool's claimed attempts waiting for a worker thread, highest priority first."""
import itertools
import math
import queue

IDLE_HOLD = 0.5  # seconds an idle worker keeps its connection (under HeldConnection.FRESH_FOR)
_STOP = ((-math.inf, 0), None)  # the job that tells a worker thread to exit (ahead of any task)


class Jobs:
    """A priority queue of ((-priority, arrival), Attempt); None stands for "stop" to a worker thread."""

    def __init__(self):
        self._queue = queue.PriorityQueue()
        self._arrivals = itertools.count()

    def put(self, attempt):
        """Queue a claimed attempt: highest priority first, then in the order claims handed them
        over (claim order: a fair task claimed in its turn keeps it, though it was due later)."""
        self._queue.put(((-attempt.claim.priority, next(self._arrivals)), attempt))

    def stop_workers(self, count):
        """Tell count worker threads to exit once they are free (ahead of any task)."""
        for _ in range(count):
            self._queue.put(_STOP)

    def next(self, connection):
        """The next attempt for a worker (None: stop); one that waits longer than IDLE_HOLD gives
        its connection back first.

        Not at once: under a stream of tasks the next one is usually a claim
        away, and a connection back to the pool costs a checkout (and on MySQL
        the pool's ROLLBACK, a round trip) for nothing.
        """
        try:
            return self._queue.get(timeout=IDLE_HOLD)[1]
        except queue.Empty:
            connection.release()
            return self._queue.get()[1]

    def take_waiting(self):
        """The next attempt if one waits, without waiting (None for none, a stop, or one given up:
        those stay for the worker's loop)."""
        try:
            job = self._queue.get_nowait()
        except queue.Empty:
            return None
        if job[1] is None or job[1].abandoned:
            self._queue.put(job)
            return None
        return job[1]

    def take_all(self):
        """Remove every waiting attempt (not the stops); return them."""
        taken = []
        while True:
            try:
                _, attempt = self._queue.get_nowait()
            except queue.Empty:
                return taken
            if attempt is not None:
                taken.append(attempt)
