"""Benchmark-only pieces, mounted when BENCH_MODE is true: a floor endpoint, the seed
pattern (the article's untracked thread pool) and a no-op task."""
import concurrent.futures
import threading

from flask import jsonify
from flask_smorest import Blueprint
from marshmallow import Schema

from db import Session, session_scope, users
from service.runner import task

blp = Blueprint("bench", __name__, url_prefix="/bench", description="Benchmark floor (bench mode)")


class NoArgs(Schema):
    pass


@blp.route("/floor", methods=["POST"])
def floor():
    """Insert one row and return: the least any request that writes can cost."""
    user = users.create_user(Session, name="floor", age=0)
    Session.commit()
    return jsonify({"id": user.id}), 201


_seed_pool = None
_seed_pool_lock = threading.Lock()


def seed_pool():
    """This process's ThreadPoolExecutor(3), made on first use (after gunicorn's fork)."""
    global _seed_pool
    with _seed_pool_lock:
        if _seed_pool is None:
            _seed_pool = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="seed")
        return _seed_pool


def insert_seed_user():
    """The article's task body: one user row, in a transaction of its own."""
    with session_scope() as session:
        users.create_user(session, name="seed pattern", age=12)


@blp.route("/seed_pattern")
def seed_pattern():
    """What the article's /user/thread_pool does: hand the insert to ThreadPoolExecutor(3)
    and answer at once. Untracked: a crash or restart loses what the pool still holds."""
    seed_pool().submit(insert_seed_user)
    return jsonify("success")


@task("bench_noop", schema=NoArgs)
def bench_noop(ctx):
    """Do nothing: what is left of its run time is the runner's overhead."""
    return None
