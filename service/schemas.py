"""Marshmallow schemas: what clients may send and what they get back."""
import datetime as dt

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from db.models import MAX_ID, STATES

MAX_TASK_DELAY = 30 * 24 * 3600  # a task can be put off by at most 30 days
MAX_PAGE_SIZE = 100


class Text(fields.String):
    """A string the databases can store: JSON escapes can carry lone surrogates, UTF-8 cannot."""

    default_error_messages = {"unicode": "Not valid Unicode text (lone surrogate)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("unicode") from None
        return text


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE  # a misspelt field is an error, not silently dropped


class PageQuery(Schema):
    """?page=&page_size=: bounded so that the offset always fits both databases."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_ID))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class UserIn(StrictSchema):
    name = Text(required=True, validate=validate.Length(min=1, max=100))
    age = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=200))


class LocalDateTime(fields.DateTime):
    """as_user.us_create_time holds the server's local time, as the article's column did: say its offset."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.astimezone()
        return super()._serialize(value, attr, obj, **kwargs)


class UserOut(Schema):
    id = fields.Integer()
    name = fields.String()
    age = fields.Integer()
    create_time = LocalDateTime()


class TaskIn(StrictSchema):
    name = Text(required=True, validate=validate.Length(min=1, max=100))
    args = fields.Dict(keys=fields.String(), load_default=dict)
    delay = fields.Float(validate=validate.Range(min=0, max=MAX_TASK_DELAY),
                         metadata={"description": "seconds to wait before running"})
    run_at = fields.AwareDateTime(
        default_timezone=dt.timezone.utc,
        metadata={"description": "ISO 8601 time to run at (UTC if no offset); "
                                 "a time in the past runs now"})
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


class TaskQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATES))
    name = Text(validate=validate.Length(min=1, max=100))
