"""What a running task sees: its id, progress reporting and cancellation."""
import threading


class TaskCancelled(Exception):
    """Raised by a task that stops because it was asked to cancel."""


class RetryTask(Exception):
    """Raised by a task to ask for another attempt, after delay seconds if given."""

    def __init__(self, reason="retry requested", delay=None):
        super().__init__(reason)
        self.delay = delay


class TaskContext:
    """Handed to every task function as its first argument."""

    def __init__(self, task_id, attempt, max_attempts):
        self.task_id = task_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._progress = None  # (percent, message) not yet saved

    @property
    def cancelled(self):
        """True once the task was asked to cancel or ran past its time limit."""
        return self._cancel.is_set()

    def raise_if_cancelled(self):
        """Raise TaskCancelled if the task should stop."""
        if self._cancel.is_set():
            raise TaskCancelled()

    def sleep(self, seconds):
        """Wait up to seconds, raising TaskCancelled as soon as the task is cancelled."""
        if self._cancel.wait(seconds):
            raise TaskCancelled()

    def progress(self, percent, message=None):
        """Report progress (0-100); the runner saves it within a heartbeat tick."""
        percent = max(0, min(100, int(percent)))
        with self._lock:
            self._progress = (percent, None if message is None else str(message)[:255])

    def cancel(self):
        """Ask the task to stop (called by the runner)."""
        self._cancel.set()

    def take_progress(self):
        """Return and clear the unsaved progress, or None (called by the runner)."""
        with self._lock:
            progress, self._progress = self._progress, None
        return progress
