"""Run tasks without HTTP: python -m service.worker (make worker)."""
import logging
import signal
import threading

from service import logs, metrics, startup
from service.config import refuse_in_one_line
from service.runner import RunnerConfig
from service.runner.threads import ThreadExecutor
from service.tokens import check_listening

log = logging.getLogger("service.worker")


def main():
    """Run the thread-pool executor until SIGTERM or SIGINT, then shut down gracefully."""
    with refuse_in_one_line():
        settings = startup.settings_from_environment()
        # Before the check: a warning it logs (metrics served open) reads like every other line.
        logs.configure(settings)
        if settings["METRICS_PORT"]:
            check_listening(settings)
    settings["TASK_WORKERS"] = max(1, settings["TASK_WORKERS"])
    # A worker runs beside the server whose processes submit.
    startup.start(settings, startup.thread_pool_connections(settings),
                  writers=startup.server_writers(settings) + 1)
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
