"""Executing: where queued tasks run. Two implementations share this interface.

threads (service.runner.threads.ThreadExecutor, the default): worker threads
in this process claim rows from the table. celery (service.runner.celery): the
web publishes task ids to a broker after commit, and Celery worker processes
claim and run the rows. Either way a task runs through service.runner.attempt
and ends through service.runner.outcomes; the row is the record.
"""


class Executor:
    """What the web, the worker and the tests need from whichever executor runs tasks."""

    owner = None  # host:pid:id of this process's runner, once started

    def start(self):
        """Start running tasks in this process (after any fork)."""
        raise NotImplementedError

    def ensure_started(self):
        """Start unless already running in this process (cheap to call on every request)."""
        raise NotImplementedError

    def alive(self):
        """True while this process can get its tasks run."""
        raise NotImplementedError

    def stop(self, grace=None):
        """Stop; running tasks get up to grace seconds, the rest go back to the queue."""
        raise NotImplementedError

    def runs_here(self):
        """True if this process has anything to start (a web process with TASK_WORKERS=0 has not)."""
        return True

    def problems(self):
        """What keeps it from working, for /readyz: {component: reason}."""
        if self.runs_here() and not self.alive():
            return {"runner": "not running"}
        return {}
