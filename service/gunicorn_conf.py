"""gunicorn settings from the same environment; the executor starts after the fork."""
import fcntl
import gc
import json
import os
import shutil
import signal
import tempfile

import gunicorn.util

# prometheus-client picks its storage when it is first imported, and the
# service imports it: several workers must share one directory, so set it
# first (one per port, so that servers on one machine keep apart). One worker
# keeps its metrics in memory: a file write per count cost a drain 3-6 %.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from service.config import server_processes  # noqa: E402  (imports no metrics)

METRICS_DIR = None
if server_processes(os.environ) > 1:
    METRICS_DIR = os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", os.path.join(_ROOT, "var", "metrics", os.environ.get("PORT") or "8000"))

from service import logs  # noqa: E402
from service.config import load_config, refuse_in_one_line  # noqa: E402
from service.tokens import check_listening  # noqa: E402

with refuse_in_one_line():
    _settings = load_config(os.environ)
    # Before the checks: a warning they log (serving open) reads like every other line.
    logs.configure(_settings)
    check_listening(_settings)

# gunicorn's own lines ("Starting gunicorn", "Booting worker", its access log when turned
# on) go through the service's handler, so that with LOG_FORMAT=json every line is JSON.
if _settings["LOG_FORMAT"] == "json":
    logconfig_dict = logs.gunicorn_logconfig(_settings)

TASK_PROCESSES = _settings["TASK_PROCESSES"]
# A worker that holds one of these files' locks is a task process (post_fork).
ROLE_DIR = tempfile.mkdtemp(prefix="service-roles-") if TASK_PROCESSES else None

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = _settings["WEB_WORKERS"] + TASK_PROCESSES
worker_class = "gthread"
threads = _settings["WEB_THREADS"]
# A worker's shutdown waits for its running tasks; the master must wait longer.
graceful_timeout = int(_settings["TASK_SHUTDOWN_GRACE"]) + 10
# /user/add sleeps SEED_SYNC_DELAY in the request, as the article's route does.
timeout = max(30, int(_settings["SEED_SYNC_DELAY"]) + 30)
# Request lines come from the app (service.logs): text at DEBUG, JSON at INFO.
accesslog = None
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


def on_starting(server):
    """Start the metrics from zero: files a killed server left would be summed in."""
    if METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
        os.makedirs(METRICS_DIR)


def child_exit(server, worker):
    """A worker that exited reports no live gauges any more (its counters stay)."""
    from service import metrics

    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    for directory in (METRICS_DIR, ROLE_DIR):
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def post_fork(server, worker):
    """Give the new worker its role: task process or web process (TASK_PROCESSES > 0).

    A worker that gets one of the TASK_PROCESSES slot locks runs tasks and closes
    its listening sockets, so it never takes a connection; the others serve
    requests and run no tasks. The kernel frees a dead worker's lock, so the
    worker gunicorn starts in its place takes over its role.
    """
    if not TASK_PROCESSES:
        return
    worker.task_slot = _take_task_slot()
    if worker.task_slot is not None:
        os.environ["PROCESS_ROLE"] = "tasks"
        for sock in worker.sockets:
            sock.close()
        worker.sockets = []
    else:
        os.environ["PROCESS_ROLE"] = "web"


def _take_task_slot():
    """The number of the free task slot this worker now holds (its lock kept open for its
    lifetime), or None."""
    for slot in range(TASK_PROCESSES):
        fd = os.open(os.path.join(ROLE_DIR, f"task-{slot}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot
    return None


def _wake_path(slot):
    return os.path.join(ROLE_DIR, f"task-{slot}.wake")


def _connect_roles(worker):
    """Task processes hear of tasks a web process queued at once, not at their next poll."""
    from service.runner import task_rows, wakeup

    if worker.task_slot is not None:
        executor = _executor(worker)
        worker.wake_listener = wakeup.Listener(_wake_path(worker.task_slot), executor.wake)
    else:
        task_rows.on_commit(wakeup.Announcer(_wake_path(slot) for slot in range(TASK_PROCESSES)))


def _executor(worker):
    extensions = getattr(worker.wsgi, "extensions", {})
    return extensions.get("executor")


def post_worker_init(worker):
    """Start this worker process's executor (never in the master, before a fork)."""
    from db import get_engine

    # With --preload the engine was made in the master: never share its pooled
    # connections with a forked child (close=False leaves the parent's alone).
    get_engine().dispose(close=False)
    # gunicorn's quick shutdown (SIGINT/SIGQUIT) raises SystemExit in the worker, and
    # a second one (Ctrl-C reaches the worker, then the master sends SIGQUIT) would
    # land inside worker_exit and skip requeueing claimed tasks: make both graceful.
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, worker.handle_exit)
    executor = _executor(worker)
    if executor is not None and executor.runs_here():
        executor.start()
    if TASK_PROCESSES:
        _connect_roles(worker)
    _warm_up(worker)


def _warm_up(worker):
    """Be ready before the first request: the pool's connections open and the code paths
    of a request (routing, schemas, the database) run once, so the first requests after
    start are as fast as the next ones."""
    from db import warm_pool

    try:
        warm_pool()
        with worker.wsgi.test_client() as client:
            client.get("/readyz")
            client.get("/openapi.json")
    except Exception:  # a cold start is slower, never fatal: the requests meet the error themselves
        worker.log.warning("warm-up did not complete", exc_info=True)
    # What start-up made (modules, the app, warmed statements) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it, with every
    # thread of the process stopped: that was the first requests' tail.
    gc.freeze()


def worker_exit(server, worker):
    """Let running tasks finish within the grace, requeue the rest."""
    executor = _executor(worker)
    if executor is not None:
        executor.stop()
