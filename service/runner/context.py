"""What a running task sees: its id, progress reporting, cancellation and its time limit."""
import threading


class TaskCancelled(Exception):
    """Raised in a task that must stop: it was cancelled (or, as TimeLimitExceeded, ran out of time)."""


def time_limit_message(seconds):
    """What a task stopped by its time limit records as its error."""
    return f"time limit of {seconds:g}s exceeded"


class TimeLimitExceeded(TaskCancelled):
    """Raised in a task that ran past its time limit: the attempt fails (retried only if
    the task's retry_on names this exception). A TaskCancelled, so cleanup code that
    catches that runs for both; catch this one first to tell them apart."""


class RetryTask(Exception):
    """Raised by a task to ask for another attempt, after delay seconds if given."""

    def __init__(self, reason="retry requested", delay=None):
        super().__init__(reason)
        self.delay = delay


class TaskContext:
    """Handed to every task function as its first argument."""

    def __init__(self, task_id, attempt, max_attempts, time_limit=None):
        self.task_id = task_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.time_limit = time_limit
        self._stop = threading.Event()
        self._timed_out = False  # why it must stop: its time limit, else a cancel
        self._lock = threading.Lock()
        self._progress = None  # (percent, message) not yet saved

    @property
    def cancelled(self):
        """True once the task was asked to cancel (or its process is shutting down)."""
        return self._stop.is_set() and not self._timed_out

    @property
    def timed_out(self):
        """True once the task ran past its time limit."""
        return self._stop.is_set() and self._timed_out

    def raise_if_cancelled(self):
        """Raise TaskCancelled (TimeLimitExceeded past the time limit) if the task must stop."""
        if self._stop.is_set():
            raise self._stopped()

    def sleep(self, seconds):
        """Wait up to seconds, raising as raise_if_cancelled() does as soon as the task must stop."""
        if self._stop.wait(seconds):
            raise self._stopped()

    def _stopped(self):
        if self._timed_out:
            return TimeLimitExceeded(time_limit_message(self.time_limit))
        return TaskCancelled("cancelled")

    def progress(self, percent, message=None):
        """Report progress (0-100); the runner saves it within a heartbeat tick."""
        percent = max(0, min(100, int(percent)))
        with self._lock:
            self._progress = (percent, None if message is None else str(message)[:255])

    def cancel(self):
        """Ask the task to stop: a cancel or a shutdown (called by the runner)."""
        self._stop.set()

    def time_out(self):
        """Stop the task because it ran past its time limit (called by the runner)."""
        with self._lock:
            if not self._stop.is_set():
                self._timed_out = True
        self._stop.set()

    def take_progress(self):
        """Return and clear the unsaved progress, or None (called by the runner)."""
        with self._lock:
            progress, self._progress = self._progress, None
        return progress
