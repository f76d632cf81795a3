"""/healthz (the process answers) and /readyz (it can do its work)."""
from marshmallow import Schema, fields
from sqlalchemy import text

from db import Session, get_engine
from service.api import Blueprint, get_executor
from service.errors import error_response

blp = Blueprint("health", __name__, description="Liveness and readiness")


class HealthOut(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok"]})


class PoolOut(Schema):
    size = fields.Integer(required=True)
    checked_out = fields.Integer(required=True)
    idle = fields.Integer(required=True, metadata={"description": "open connections waiting in the pool"})


class ReadyOut(HealthOut):
    runner = fields.String(required=True, allow_none=True,
                           metadata={"description": "host:pid:id of this process's runner"})
    pool = fields.Nested(PoolOut, required=True)


@blp.route("/healthz")
@blp.response(200, HealthOut)
def healthz():
    """Answer 200 while the process serves requests."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.response(200, ReadyOut)
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
    executor = get_executor()
    problems.update(executor.problems())
    if problems:
        return error_response(503, "not ready", problems)
    pool = get_engine().pool
    return {"status": "ok", "runner": executor.owner,
            "pool": {"size": pool.size(), "checked_out": pool.checkedout(), "idle": pool.checkedin()}}
