"""One JSON error shape for every failure: {"code", "message", "details"}."""
import logging

from flask import current_app, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, InternalServerError

from service.runner import InvalidArguments, QueueFull, UnknownTask
from db.dialects import is_transient

log = logging.getLogger(__name__)

RETRY_AFTER = 5  # seconds a client should wait before trying again


def error_response(status, message, details=None, headers=None):
    """Build the JSON error response."""
    response = jsonify({"code": status, "message": message, "details": details or {}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_http_exception(error):
    """Render werkzeug and flask-smorest errors, keeping field messages as details."""
    data = getattr(error, "data", None) or {}
    details = data.get("details") or data.get("messages") or {}
    message = data.get("message") or error.description or error.name
    if error.code == 400 and isinstance(details, dict) and "json" in details:
        message = "Malformed JSON body."
    headers = dict(data.get("headers") or {})
    if hasattr(error, "valid_methods") and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return error_response(error.code, message, details, headers)


def handle_unexpected(error):
    """Log the traceback and answer 500 without leaking it (unless DEBUG)."""
    log.exception("unhandled error")
    details = {"error": repr(error)} if current_app.debug else {}
    return error_response(500, InternalServerError.description, details)


def handle_database_error(error):
    """A database that is down or busy is the server's trouble: 503, try again later."""
    if not is_transient(error):
        return handle_unexpected(error)
    log.warning("database unavailable: %s", error.orig)
    return error_response(503, "The database is unavailable; try again shortly.",
                          headers={"Retry-After": str(RETRY_AFTER)})


def handle_queue_full(error):
    return error_response(503, str(error), headers={"Retry-After": str(RETRY_AFTER)})


def handle_unknown_task(error):
    return error_response(422, "Unknown task name.", {"json": {"name": [str(error)]}})


def handle_invalid_arguments(error):
    return error_response(422, "Invalid task arguments.", {"json": {"args": error.messages}})


def register_error_handlers(app):
    """Answer every error with the JSON shape (call after the Api is set up)."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(QueueFull, handle_queue_full)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(UnknownTask, handle_unknown_task)
    app.register_error_handler(InvalidArguments, handle_invalid_arguments)
    app.register_error_handler(Exception, handle_unexpected)
