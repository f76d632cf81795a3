"""The original article's routes at /user, kept working and made safe."""
import math
import threading
import time

from flask import current_app, jsonify, url_for
from flask_smorest import abort

from db import Session, tasks, users
from db.reset import reset_database_and_commit
from service.api import Blueprint
from service.api.openapi import LOCATION
from service.errors import RETRY_AFTER
from service.runner.group_commit import enqueue_and_commit

blp = Blueprint("user", __name__, url_prefix="/user",
                description="The article's routes, kept for compatibility")

SUCCESS = {"type": "string", "enum": ["success"]}


@blp.record_once
def make_sync_slots(state):
    """The request threads /user/add may hold at once in this process (SEED_SYNC_SLOTS)."""
    state.app.extensions["seed_sync_slots"] = threading.BoundedSemaphore(
        state.app.config["SEED_SYNC_SLOTS"]) if state.app.config["SEED_SYNC_SLOTS"] else None


@blp.route("/initdb")
@blp.response(200, SUCCESS, description="Every table emptied; ids restart at 1")
@blp.alt_response(403, description="ALLOW_DB_RESET is off (the default)")
@blp.alt_response(409, description="Tasks are queued or running")
def init_db():
    """Empty every table.

    Refused (403) unless the server runs with ALLOW_DB_RESET=true, and (409)
    while tasks are queued or running.
    """
    if not current_app.config["ALLOW_DB_RESET"]:
        abort(403, message="database reset is disabled; set ALLOW_DB_RESET=true to allow it")
    unfinished = tasks.count_unfinished(Session)
    if unfinished:
        abort(409, message=f"{unfinished} tasks are queued or running; cancel them or wait")
    reset_database_and_commit(Session)
    return jsonify("success")


@blp.route("/add")
@blp.response(200, {"type": "integer", "minimum": 1}, description="The new user's id")
def add_user():
    """Create zhangsan (12) in the request, the slow way.

    The request works SEED_SYNC_DELAY seconds (10 by default) before it
    inserts, as the article's route does. At most SEED_SYNC_SLOTS of these run at once in a server process, so they
    can never take every request thread; the others are answered 503 at once,
    with Retry-After.
    """
    slots = current_app.extensions["seed_sync_slots"]
    if slots is None:
        abort(503, message="/user/add is off: SEED_SYNC_SLOTS is 0 (too few WEB_THREADS to spare one)",
              headers={"Retry-After": str(RETRY_AFTER)})
    if not slots.acquire(blocking=False):
        retry_after = max(1, math.ceil(current_app.config["SEED_SYNC_DELAY"]))
        abort(503, message="too many slow /user/add requests at once; try again shortly",
              headers={"Retry-After": str(retry_after)})
    try:
        time.sleep(current_app.config["SEED_SYNC_DELAY"])  # the article's slow work, outside any transaction
    finally:
        slots.release()
    user = users.create_user(Session, name="zhangsan", age=12)
    Session.commit()
    return jsonify(user.id)


def submit_seed_user(name):
    """Queue create_user for the article's thread routes and answer "success"."""
    delay = current_app.config["SEED_TASK_DELAY"]
    task = enqueue_and_commit(Session, "create_user", {"name": name, "age": 12, "delay": delay})
    response = jsonify("success")
    response.headers["Location"] = url_for("tasks.TaskItem", task_id=task.id)
    return response


QUEUED = dict(description="Queued; Location points at the task", headers={"Location": LOCATION})


@blp.route("/thread_pool")
@blp.response(200, SUCCESS, **QUEUED)
def thread_pool():
    """Queue 'thread pool' (12) on the bounded runner."""
    return submit_seed_user("thread pool")


@blp.route("/thread")
@blp.response(200, SUCCESS, **QUEUED)
def thread():
    """Queue 'thread' (12) on the same bounded runner (no thread per request)."""
    return submit_seed_user("thread")
