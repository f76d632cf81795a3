"""Marshmallow schemas: what clients may send and what they get back."""
import datetime as dt
import re

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from db.models import MAX_ID, STATES, UNFINISHED_STATES
from db.bulk import RETRYABLE

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


# C0 (NUL to US, tab and newline included), DEL and C1: invisible, or break a log line or a terminal.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def no_control_characters(text):
    """Refuse a string holding a control character (marshmallow validator, for names and keys)."""
    found = CONTROL_CHARACTERS.search(text)
    if found:
        raise ValidationError(f"Must not contain control characters (found {found.group()!r} "
                              f"at position {found.start()}).")
    return True


class Name(Text):
    """A name a person reads (a task's, a user's): text without control characters."""

    def __init__(self, metadata=None, **kwargs):
        # The document says it too (ECMA-262's $ is the very end), so a client can know.
        metadata = {"pattern": r"^[^\x00-\x1f\x7f-\x9f]*$", **(metadata or {})}
        super().__init__(metadata=metadata, **kwargs)
        self.validators.insert(0, no_control_characters)


class JsonBoolean(fields.Boolean):
    """true or false only: marshmallow would also take 0, 1, "yes" and "on" (and 0 == False in a set)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE  # a misspelt field is an error, not silently dropped


class PageQuery(Schema):
    """?page=&page_size=: bounded so that the offset always fits both databases."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_ID))
    page_size = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


class UserIn(StrictSchema):
    name = Name(required=True, validate=validate.Length(min=1, max=100))
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


class TaskOptions(StrictSchema):
    """How a task runs, beside its name and arguments: a submit's and a workflow step's."""

    delay = fields.Float(validate=validate.Range(min=0, max=MAX_TASK_DELAY),
                         metadata={"description": "seconds to wait before running"})
    max_attempts = fields.Integer(strict=True, validate=validate.Range(min=1, max=100))
    time_limit = fields.Float(validate=validate.Range(min=0.1, max=24 * 3600),
                              metadata={"description": "seconds before the task is stopped"})
    priority = fields.Integer(strict=True, validate=validate.Range(min=-100, max=100),
                              metadata={"description": "higher runs first; the task's default if absent"})


class TaskIn(TaskOptions):
    name = Name(required=True, validate=validate.Length(min=1, max=100))
    args = fields.Dict(keys=fields.String(), load_default=dict)
    run_at = fields.AwareDateTime(
        default_timezone=dt.timezone.utc,
        metadata={"description": "ISO 8601 time to run at (UTC if no offset); "
                                 "a time in the past runs now"})

    @validates_schema
    def one_start_time(self, data, **kwargs):
        if "delay" in data and "run_at" in data:
            raise ValidationError("give delay or run_at, not both", field_name="run_at")


class SubmitHeaders(Schema):
    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Regexp(r"^[\x21-\x7e]{1,200}\Z",  # \Z: $ would let a final newline by
                                 error="1-200 visible ASCII characters (no spaces)"),
        metadata={"description": "While a task submitted with this key is unfinished, or for "
                                 "UNIQUE_WINDOW (a day) after it finished, a submit with the key "
                                 "answers that task (200) instead of adding one; the same key with "
                                 "another body is a 422."})


class UtcDateTime(fields.DateTime):
    """Stored times are naive UTC; say so in the output."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class RateUse(Schema):
    key = fields.String(required=True, metadata={"description": "the key its starts count under"})
    starts = fields.Integer(required=True, metadata={"description": "starts allowed in any window"})
    seconds = fields.Float(required=True, metadata={"description": "the window's length"})
    started = fields.Integer(required=True, allow_none=True,
                             metadata={"description": "starts in the last window (null: none of its tasks is unfinished)"})
    reserved = fields.Integer(required=True, metadata={"description": "its tasks claimed to start"})
    queued = fields.Integer(required=True, metadata={"description": "its tasks queued"})
    full = fields.Boolean(required=True, metadata={"description": "no room for another start now"})
    room_at = UtcDateTime(required=True, allow_none=True,
                          metadata={"description": "when a counted start stops counting (if full)"})


class TaskRate(RateUse):
    waiting = fields.Boolean(required=True, metadata={"description": "queued and due, waiting for its rate limit"})


class TaskFair(Schema):
    key = fields.String(required=True, metadata={"description": "the key it takes turns under"})
    ahead = fields.Integer(required=True, allow_none=True,
                           metadata={"description": "queued fair tasks of its priority before it in turn order "
                                                    "(null unless it is queued)"})


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
    priority = fields.Integer(metadata={"description": "higher runs first"})
    queue = fields.String()
    retry_of = fields.Integer(allow_none=True, metadata={"description": "the task this one retries"})
    retried_by = fields.Integer(allow_none=True, metadata={"description": "the task that retried this one"})
    workflow = fields.Integer(allow_none=True, metadata={"description": "the workflow whose step it runs"})
    rate = fields.Nested(TaskRate, allow_none=True, metadata={"description": "its rate limit and its use (none: no rate limit)"})
    fair = fields.Nested(TaskFair, allow_none=True,
                         metadata={"description": "its fair share key and turn (none: not a fair task)"})


class TaskQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATES))
    name = Name(validate=validate.Length(min=1, max=100))


class BulkIn(StrictSchema):
    """Which tasks a bulk action takes: the list filters, and how many at most."""

    name = Name(validate=validate.Length(min=1, max=100))
    dry_run = JsonBoolean(load_default=False, metadata={"description": "only count them"})
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000),
                           metadata={"description": "the most tasks one request changes"})


class RetryIn(BulkIn):
    status = fields.String(validate=validate.OneOf(RETRYABLE),
                           metadata={"description": "failed or cancelled; both if absent"})


class CancelIn(BulkIn):
    status = fields.String(validate=validate.OneOf(UNFINISHED_STATES),
                           metadata={"description": "queued, reserved or running; all if absent"})


class BulkOut(Schema):
    matched = fields.Integer(required=True, metadata={"description": "tasks the filter matches now"})
    affected = fields.Integer(required=True, metadata={"description": "tasks this request changed"})
    dry_run = fields.Boolean(required=True)


class RunnerOut(Schema):
    owner = fields.String(required=True)
    host = fields.String(required=True)
    pid = fields.Integer(required=True)
    workers = fields.Integer(required=True)
    busy = fields.Integer(required=True)
    started_at = UtcDateTime(required=True)
    heartbeat_at = UtcDateTime(required=True)
    lost = fields.Boolean(required=True, metadata={"description": "silent for longer than the lease"})


class StatusCounts(Schema):
    queued = fields.Integer(required=True)
    reserved = fields.Integer(required=True, metadata={"description": "claimed ahead by a task process, not started"})
    running = fields.Integer(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class NameCounts(StatusCounts):
    name = fields.String(required=True)


class QueueOut(Schema):
    queued = fields.Integer(required=True)
    due = fields.Integer(required=True, metadata={"description": "queued and due to run now"})
    oldest_due_age = fields.Float(required=True, allow_none=True,
                                  metadata={"description": "seconds the oldest due task has waited"})


class MinuteOut(Schema):
    minute = UtcDateTime(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class StatsOut(Schema):
    statuses = fields.Nested(StatusCounts, required=True)
    names = fields.List(fields.Nested(NameCounts), required=True)
    queue = fields.Nested(QueueOut, required=True)
    finished_per_minute = fields.List(fields.Nested(MinuteOut), required=True,
                                      metadata={"description": "the last 60 minutes, oldest first"})
    runners = fields.List(fields.Nested(RunnerOut), required=True)
    rate_limits = fields.List(fields.Nested(RateUse), required=True,
                              metadata={"description": "rate keys with unfinished tasks, the most queued first (50 at most)"})
    lease = fields.Float(required=True, metadata={"description": "TASK_LEASE: a runner silent longer is lost"})
    generated_at = UtcDateTime(required=True)
