"""Marshmallow schemas: what clients may send and what they get back."""
import datetime as dt

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from db.models import STATES

MAX_TASK_DELAY = 30 * 24 * 3600  # a task can be put off by at most 30 days


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE  # a misspelt field is an error, not silently dropped


class UserIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    age = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=200))


class UserOut(Schema):
    id = fields.Integer()
    name = fields.String()
    age = fields.Integer()
    create_time = fields.DateTime()


class TaskIn(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    args = fields.Dict(keys=fields.String(), load_default=dict)
    delay = fields.Float(validate=validate.Range(min=0, max=MAX_TASK_DELAY),
                         metadata={"description": "seconds to wait before running"})
    run_at = fields.AwareDateTime(default_timezone=dt.timezone.utc,
                                  metadata={"description": "ISO 8601 time to run at (UTC)"})
    max_attempts = fields.Integer(strict=True, validate=validate.Range(min=1, max=100))
    time_limit = fields.Float(validate=validate.Range(min=0.1, max=24 * 3600),
                              metadata={"description": "seconds before the task is stopped"})

    @validates_schema
    def one_start_time(self, data, **kwargs):
        if "delay" in data and "run_at" in data:
            raise ValidationError("give delay or run_at, not both", field_name="run_at")


class UtcDateTime(fields.DateTime):
    """Stored times are naive UTC; say so in the output."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class TaskOut(Schema):
    id = fields.Integer()
    name = fields.String()
    args = fields.Raw()
    status = fields.String()
    progress = fields.Integer()
    message = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    traceback = fields.String(allow_none=True)
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    time_limit = fields.Float(allow_none=True)
    cancel_requested = fields.Boolean()
    owner = fields.String(allow_none=True)
    run_after = UtcDateTime()
    created_at = UtcDateTime()
    started_at = UtcDateTime(allow_none=True)
    finished_at = UtcDateTime(allow_none=True)
    heartbeat_at = UtcDateTime(allow_none=True)


class TaskQuery(Schema):
    status = fields.String(validate=validate.OneOf(STATES))
    name = fields.String(validate=validate.Length(min=1, max=100))
