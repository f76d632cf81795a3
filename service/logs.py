"""Logging: human-readable lines by default, one JSON object per line with LOG_FORMAT=json.

Every line logged while a task runs carries its id, name, attempt and owner
(the runner sets them around each attempt); request lines carry method,
path, status and duration. Headers, and so tokens, are never logged.
"""
import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(threadName)s %(name)s: %(task)s%(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(threadName)s %(message)s"
TASK_FIELDS = ("task_id", "task_name", "attempt", "owner")
HANDLER_NAME = "service"

current_task = contextvars.ContextVar("current_task", default=None)
requests_log = logging.getLogger("service.requests")
request_level = logging.DEBUG


class TaskFields(logging.Filter):
    """Put the running task's fields on every record logged in its thread."""

    def filter(self, record):
        task = current_task.get()
        for field in TASK_FIELDS:
            setattr(record, field, task[field] if task else None)
        record.task = (f"[task {task['task_id']} {task['task_name']} attempt {task['attempt']}] "
                       if task else "")
        return True


class Json(JsonFormatter):
    """JSON lines without the empty task fields of lines logged outside a task."""

    def process_log_record(self, log_record):
        for field in TASK_FIELDS:
            if log_record.get(field) is None:
                log_record.pop(field, None)
        log_record.pop("task", None)
        return log_record


def configure(settings):
    """Send the service's logs to stderr at LOG_LEVEL, as text or JSON (LOG_FORMAT)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskFields())
    if settings["LOG_FORMAT"] == "json":
        handler.setFormatter(Json(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.name = HANDLER_NAME
    root = logging.getLogger()
    # Replace the handler an earlier call added; leave others (pytest's, an embedding app's).
    root.handlers[:] = [h for h in root.handlers if h.name != HANDLER_NAME] + [handler]
    root.setLevel(settings["LOG_LEVEL"])
    global request_level
    # JSON logs feed a collector, where request lines belong; on a terminal they are DEBUG.
    request_level = logging.INFO if settings["LOG_FORMAT"] == "json" else logging.DEBUG


def log_request(method, path, status, seconds):
    """One line for an answered request (the path only: a query may carry what is not ours to log)."""
    if requests_log.isEnabledFor(request_level):
        duration = round(seconds * 1000, 2)
        requests_log.log(request_level, "%s %s %s %.2fms", method, path, status, duration,
                         extra={"method": method, "path": path, "status": status,
                                "duration_ms": duration})


def running(claim, owner):
    """Mark the current thread as running this attempt; returns the token to pass to finished()."""
    return current_task.set({"task_id": claim.id, "task_name": claim.name,
                             "attempt": claim.attempt, "owner": owner})


def finished(token):
    current_task.reset(token)
