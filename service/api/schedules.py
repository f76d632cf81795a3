"""/api/schedules: the recurring tasks, their last run and next slot."""
from flask import current_app
from marshmallow import Schema, fields

from db import Session
from service.api import Blueprint
from service.runner.scheduler import list_schedules
from service.schemas import UtcDateTime

blp = Blueprint("schedules", __name__, url_prefix="/api/schedules", description="Recurring tasks")


class ScheduleOut(Schema):
    name = fields.String(required=True, metadata={"description": "the task's name"})
    schedule = fields.String(required=True, metadata={"description": 'the cron text, or "every N s"'})
    cron = fields.String(required=True, allow_none=True)
    every = fields.Float(required=True, allow_none=True, metadata={"description": "seconds"})
    args = fields.Dict(required=True, metadata={"description": "the arguments each run gets"})
    queue = fields.String(required=True)
    timezone = fields.String(required=True, metadata={"description": "cron's time zone (SCHEDULE_TZ)"})
    last_run_at = UtcDateTime(required=True, allow_none=True,
                              metadata={"description": "the slot its last task was queued for"})
    last_task_id = fields.Integer(required=True, allow_none=True)
    next_run_at = UtcDateTime(required=True, metadata={"description": "its next slot"})


@blp.route("")
@blp.response(200, ScheduleOut(many=True))
def get_schedules():
    """Every recurring task (@task(cron=...) or every=...) with its last run and next slot."""
    return list_schedules(Session, current_app.config["SCHEDULE_TZ"])
