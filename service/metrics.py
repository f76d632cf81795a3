"""Prometheus metrics (prometheus-client). Imports no Flask: the runner counts here too.

Task counters and histograms are counted by the process that sees each
event; queue gauges are read from the table at scrape time, so every process
reports the same. Under gunicorn with several workers, prometheus-client's
multiprocess mode sums the workers' files in PROMETHEUS_MULTIPROC_DIR, which
service/gunicorn_conf.py sets (under var/) before anything imports this.
"""
import functools
import json
import os
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, make_wsgi_app, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from db import session_scope, stats
from db.models import QUEUED, RESERVED, RUNNING, utcnow
from service.tokens import token_matches

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

SUBMITTED = Counter("tasks_submitted_total", "Tasks queued (retries asked for by a user included)", ["name"])
SUCCEEDED = Counter("tasks_succeeded_total", "Tasks that succeeded", ["name"])
FAILED = Counter("tasks_failed_total", "Tasks that failed for good", ["name"])
RETRIED = Counter("tasks_retried_total",
                  "Attempts put back for another try, and failed tasks retried by a user", ["name"])
CANCELLED = Counter("tasks_cancelled_total", "Tasks cancelled, queued or running", ["name"])
THROTTLED = Counter("tasks_throttled_total",
                    "Starts put off by a rate limit: the task went back to the queue, its attempt not counted",
                    ["name"])
RUN_TIME = Histogram("task_run_seconds", "How long an attempt ran", ["name"], buckets=SECONDS)
QUEUE_WAIT = Histogram("task_queue_wait_seconds", "How long a task waited between due and started",
                       ["name"], buckets=SECONDS)
# Every metric has labels: in multiprocess mode one without would open its file at import,
# in gunicorn's master before the metrics directory is made.
WORKFLOWS_STARTED = Counter("workflows_started_total", "Workflows submitted, or retried", ["how"])
WORKFLOWS_FINISHED = Counter("workflows_finished_total", "Workflows that ended, by outcome", ["outcome"])
WORKERS = Gauge("task_workers", "Task threads of this process, busy or idle", ["state"],
                multiprocess_mode="liveall")
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "Time to answer an HTTP request",
                         ["method", "route"], buckets=SECONDS[:11])


@functools.lru_cache(maxsize=4096)
def by_name(metric, name):
    """metric.labels(name), kept: labels() costs more than the count itself, on every task."""
    return metric.labels(name)


def observe_start(name, due_at, now=None):
    """A worker started a task that was due at due_at (naive UTC)."""
    waited = ((now or utcnow()) - due_at).total_seconds()
    by_name(QUEUE_WAIT, name).observe(max(0.0, waited))


def set_workers(busy, idle):
    """This process's task threads, now."""
    WORKERS.labels("busy").set(busy)
    WORKERS.labels("idle").set(idle)


class TableCollector:
    """Queue gauges read from the tasks table at scrape time, the same from every process."""

    def collect(self):
        with session_scope() as session:
            counts = stats.unfinished_counts(session)
            _, due, oldest = stats.queue_depth(session)
        gauges = {
            QUEUED: GaugeMetricFamily("tasks_queued", "Tasks waiting to run, due or not", labels=["name"]),
            RESERVED: GaugeMetricFamily("tasks_reserved", "Tasks claimed ahead by a task process, "
                                        "waiting for one of its workers", labels=["name"]),
            RUNNING: GaugeMetricFamily("tasks_running", "Tasks a worker is running now", labels=["name"]),
        }
        for (name, status), n in sorted(counts.items()):
            gauges[status].add_metric([name], n)
        yield from gauges.values()
        yield GaugeMetricFamily("tasks_due", "Queued tasks due to run now", value=due)
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily("tasks_oldest_due_age_seconds",
                                "How long the oldest due task has waited (0 when none)", value=age)


def multiprocess_dir():
    """The directory of prometheus-client's multiprocess mode, or None in a single process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry():
    """The registry a scrape reads: every worker's files (multiprocess) or this process, plus the table."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(TableCollector())
        return registry
    global _table_registered
    if not _table_registered:
        REGISTRY.register(TableCollector())
        _table_registered = True
    return REGISTRY


_table_registered = False


def render():
    """(body, content type) of a scrape."""
    return generate_latest(scrape_registry()), CONTENT_TYPE_LATEST


def serve(port, host="127.0.0.1", tokens=()):
    """Serve the scrape on its own port in a thread (make worker, METRICS_PORT); return the server.

    With tokens, a scrape needs `Authorization: Bearer <one of them>`, as /metrics does on the web.
    """
    app = make_wsgi_app(scrape_registry())
    if tokens:
        app = _bearer_only(app, tokens)
    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _bearer_only(app, tokens):
    """Wrap a WSGI app so that it answers 401 without a valid bearer token."""
    def guarded(environ, start_response):
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(given.strip(), tokens):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                            ("WWW-Authenticate", 'Bearer realm="tasks"')])
        return [json.dumps({"code": 401, "message": "authentication required", "details": {}}).encode()]
    return guarded


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # a scrape every few seconds is not news
        pass


def mark_process_dead(pid):
    """Drop a finished gunicorn worker's live gauges (its counters stay counted)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
