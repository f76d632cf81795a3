"""Run tasks without HTTP: python -m service.worker (make worker)."""
import logging
import os
import signal
import threading

from db import init_engine
from service.config import load_config, pool_size
from service.runner import Runner

log = logging.getLogger("service.worker")


def main():
    """Run the task runner until SIGTERM or SIGINT, then shut down gracefully."""
    from service import configure_logging_from, runner_config
    import service.jobs  # noqa: F401  registers the task functions

    settings = load_config(os.environ)
    configure_logging_from(settings)
    workers = max(1, settings["TASK_WORKERS"])
    settings["TASK_WORKERS"] = workers
    needed = pool_size(settings, request_threads=0)
    init_engine(settings["DATABASE_URL"], pool_size=needed, max_overflow=needed)
    runner = Runner(runner_config(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner.start()
    log.info("worker %s running; SIGTERM or Ctrl-C to stop", runner.owner)
    while not stop.wait(1.0):
        if not runner.alive():
            log.error("runner died; exiting")
            raise SystemExit(1)
    runner.stop()


if __name__ == "__main__":
    main()
