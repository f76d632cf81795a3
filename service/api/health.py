"""/healthz (the process answers) and /readyz (it can do its work)."""
from flask import jsonify
from flask_smorest import Blueprint
from sqlalchemy import text

from db import Session, get_engine
from service.api import get_runner
from service.errors import error_response

blp = Blueprint("health", __name__, description="Liveness and readiness")


@blp.route("/healthz")
def healthz():
    """Answer 200 while the process serves requests."""
    return jsonify({"status": "ok"})


@blp.route("/readyz")
@blp.alt_response(503, description="Database unreachable or runner down")
def readyz():
    """Answer 200 when the database answers and the task runner is alive."""
    problems = {}
    try:
        Session.execute(text("SELECT 1"))
        Session.rollback()
    except Exception as error:
        Session.rollback()
        problems["database"] = f"unreachable: {type(error).__name__}"
    runner = get_runner()
    if runner.config.workers and not runner.alive():
        problems["runner"] = "not running"
    if problems:
        return error_response(503, "not ready", problems)
    pool = get_engine().pool
    return jsonify({"status": "ok", "runner": runner.owner,
                    "pool": {"size": pool.size(), "checked_out": pool.checkedout()}})
