"""Run tasks without HTTP: python -m service.worker (make worker)."""
import logging
import os
import signal
import threading

from db import init_engine
from service import logs, metrics
from service.config import load_config, pool_size, refuse_in_one_line, write_turn
from service.runner import RunnerConfig, submit
from service.runner.registry import load_task_modules
from service.runner.threads import ThreadExecutor
from service.tokens import check_listening

log = logging.getLogger("service.worker")


def main():
    """Run the thread-pool executor until SIGTERM or SIGINT, then shut down gracefully."""
    with refuse_in_one_line():
        settings = load_config(os.environ)
        # Before the check: a warning it logs (metrics served open) reads like every other line.
        logs.configure(settings)
        if settings["METRICS_PORT"]:
            check_listening(settings)
    load_task_modules(settings)
    workers = max(1, settings["TASK_WORKERS"])
    settings["TASK_WORKERS"] = workers
    needed = pool_size(settings, request_threads=0)
    # A worker runs beside the processes that submit: two processes at least.
    init_engine(settings["DATABASE_URL"], pool_size=needed, max_overflow=needed,
                write_turn=write_turn(settings, processes=2))
    submit.configure(settings["TASK_MAX_QUEUED"], settings["UNIQUE_WINDOW"])
    # Always the thread pool, whatever TASK_EXECUTOR says: Celery has its own worker
    # (make celery-worker); rows are claimed fenced, so both may run at once.
    runner = ThreadExecutor(RunnerConfig.from_settings(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner.start()
    log.info("worker %s running; SIGTERM or Ctrl-C to stop", runner.owner)
    if settings["METRICS_PORT"]:
        metrics.serve(settings["METRICS_PORT"], settings["HOST"], settings["API_TOKENS"])
        log.info("metrics at http://%s:%d/metrics", settings["HOST"], settings["METRICS_PORT"])
    while not stop.wait(1.0):
        if not runner.alive():
            log.error("runner died; exiting")
            raise SystemExit(1)
    runner.stop()


if __name__ == "__main__":
    main()
