"""Benchmark-only pieces, mounted when BENCH_MODE is true: a floor endpoint and a no-op task."""

from flask import jsonify
from marshmallow import Schema

from db import Session, users
from service.api import Blueprint
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


@task("bench_noop", schema=NoArgs)
def bench_noop(ctx):
    """Do nothing: what is left of its run time is the runner's overhead."""
    return None
