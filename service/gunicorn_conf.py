"""gunicorn settings from the same environment; the runner starts after the fork."""
import json
import os
import signal
import sys

import gunicorn.util

from service.auth import check_listening
from service.config import ConfigError, load_config

try:
    _settings = load_config(os.environ)
    check_listening(_settings)
except ConfigError as error:
    sys.exit(f"not starting: {error}")  # one line, no traceback

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = _settings["WEB_WORKERS"]
worker_class = "gthread"
threads = _settings["WEB_THREADS"]
# A worker's shutdown waits for its running tasks; the master must wait longer.
graceful_timeout = int(_settings["TASK_SHUTDOWN_GRACE"]) + 10
# /user/add sleeps SEED_SYNC_DELAY in the request, as the article's route does.
timeout = max(30, int(_settings["SEED_SYNC_DELAY"]) + 30)
accesslog = "-" if _settings["LOG_LEVEL"] == "DEBUG" else None
wsgi_app = "service:create_app()"
# Several servers may run on one machine (tests, web + worker); the control socket would collide.
control_socket_disable = True


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own answers (a request line too long, a malformed header) in our JSON error shape."""
    body = json.dumps({"code": status_int, "message": reason,
                       "details": {"request": mesg} if mesg else {}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn.util.write_nonblock(sock, head.encode("latin1") + body)


# gunicorn writes these HTML pages itself, before the app sees the request;
# it looks the writer up on its util module at each use.
gunicorn.util.write_error = write_json_error


def _runner(worker):
    extensions = getattr(worker.wsgi, "extensions", {})
    return extensions.get("runner")


def post_worker_init(worker):
    """Start this worker process's task runner (never in the master, before a fork)."""
    from db import get_engine

    # With --preload the engine was made in the master: never share its pooled
    # connections with a forked child (close=False leaves the parent's alone).
    get_engine().dispose(close=False)
    # gunicorn's quick shutdown (SIGINT/SIGQUIT) raises SystemExit in the worker, and
    # a second one (Ctrl-C reaches the worker, then the master sends SIGQUIT) would
    # land inside worker_exit and skip requeueing claimed tasks: make both graceful.
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, worker.handle_exit)
    runner = _runner(worker)
    if runner is not None and runner.config.workers:
        runner.start()


def worker_exit(server, worker):
    """Let running tasks finish within the grace, requeue the rest."""
    runner = _runner(worker)
    if runner is not None:
        runner.stop()
