"""The original article's routes at /user, kept working and made safe."""
import time

from flask import current_app, jsonify, url_for
from flask_smorest import Blueprint, abort

from db import Session, tasks, users
from db.reset import reset_database_and_commit
from service.api import get_runner

blp = Blueprint("user", __name__, url_prefix="/user",
                description="The article's routes, kept for compatibility")


@blp.route("/initdb")
@blp.alt_response(403, description="ALLOW_DB_RESET is off")
@blp.alt_response(409, description="Tasks are queued or running")
def init_db():
    """Empty every table (only when ALLOW_DB_RESET is true)."""
    if not current_app.config["ALLOW_DB_RESET"]:
        abort(403, message="database reset is disabled; set ALLOW_DB_RESET=true to allow it")
    unfinished = tasks.count_unfinished(Session)
    if unfinished:
        abort(409, message=f"{unfinished} tasks are queued or running; cancel them or wait")
    reset_database_and_commit(Session)
    return jsonify("success")


@blp.route("/add")
def add_user():
    """Create zhangsan (12) after SEED_SYNC_DELAY seconds, in the request; return the id."""
    time.sleep(current_app.config["SEED_SYNC_DELAY"])  # the article's slow work, outside any transaction
    user = users.create_user(Session, name="zhangsan", age=12)
    Session.commit()
    return jsonify(user.id)


def submit_seed_user(name):
    """Queue create_user for the article's thread routes and answer "success"."""
    delay = current_app.config["SEED_TASK_DELAY"]
    task = get_runner().enqueue("create_user", {"name": name, "age": 12, "delay": delay})
    response = jsonify("success")
    response.headers["Location"] = url_for("tasks.Task", task_id=task.id)
    return response


@blp.route("/thread_pool")
def thread_pool():
    """Queue 'thread pool' (12) on the bounded runner."""
    return submit_seed_user("thread pool")


@blp.route("/thread")
def thread():
    """Queue 'thread' (12) on the same bounded runner (no thread per request)."""
    return submit_seed_user("thread")
