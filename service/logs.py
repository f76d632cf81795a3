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


def make_handler(log_format):
    """The service's handler: lines to stderr as text or JSON (LOG_FORMAT), with the running task's fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskFields())
    if log_format == "json":
        handler.setFormatter(Json(JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.name = HANDLER_NAME
    return handler


def configure(settings):
    """Send the service's logs to stderr at LOG_LEVEL, as text or JSON (LOG_FORMAT)."""
    handler = make_handler(settings["LOG_FORMAT"])
    root = logging.getLogger()
    # Replace the handler an earlier call added; leave others (pytest's, an embedding app's).
    root.handlers[:] = [h for h in root.handlers if h.name != HANDLER_NAME] + [handler]
    root.setLevel(settings["LOG_LEVEL"])
    # In JSON a Python warning must be a record too, not a bare line on stderr.
    logging.captureWarnings(settings["LOG_FORMAT"] == "json")
    global request_level
    # JSON logs feed a collector, where request lines belong; on a terminal they are DEBUG.
    request_level = logging.INFO if settings["LOG_FORMAT"] == "json" else logging.DEBUG


def gunicorn_logconfig(settings):
    """gunicorn's logconfig_dict: its error log and access log (if on) through the service's
    handler, so that with LOG_FORMAT=json gunicorn's own lines are JSON as well."""
    through_ours = {"handlers": [HANDLER_NAME], "propagate": False}  # levels stay gunicorn's
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": settings["LOG_LEVEL"], "handlers": [HANDLER_NAME]},
        "loggers": {"gunicorn.error": through_ours, "gunicorn.access": dict(through_ours)},
        # dictConfig names the handler after its key: configure() in a worker then replaces it.
        "handlers": {HANDLER_NAME: {"()": make_handler, "log_format": settings["LOG_FORMAT"]}},
    }


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
