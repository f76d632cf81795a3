"""Marshmallow schemas of workflows: the JSON tree a client sends, and what it gets back."""
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from db.models import MAX_ID, WORKFLOW_STATES
from db.workflow_views import STEP_STATES
from service.runner.canvas import MAX_DEPTH, MAX_STEPS
from service.schemas import JsonBoolean, Name, PageQuery, StrictSchema, TaskOptions, UtcDateTime

COMPOSITES = ("chain", "group", "chord")
TASK_FIELDS = ("name", "args", "delay", "priority", "max_attempts", "time_limit")


def _steps(**kwargs):
    return fields.List(fields.Nested(lambda: StepIn()), validate=validate.Length(min=1, max=MAX_STEPS), **kwargs)


class ChordIn(StrictSchema):
    group = _steps(required=True)
    then = fields.Nested(lambda: StepIn(), required=True)


class StepIn(TaskOptions):
    """A step: a task {"name", "args", options}, or {"chain": [...]}, {"group": [...]},
    {"chord": {"group": [...], "then": step}}; a composite may add "on_error": a task step."""

    name = Name(validate=validate.Length(min=1, max=100), metadata={"description": "a task step's task"})
    args = fields.Dict(keys=fields.String())
    chain = _steps()
    group = _steps()
    chord = fields.Nested(ChordIn)
    on_error = fields.Nested(lambda: StepIn(), metadata={"description": "a task step, run once if a step below fails"})

    @validates_schema
    def one_kind(self, data, **kwargs):
        kinds = [kind for kind in ("name",) + COMPOSITES if kind in data]
        if len(kinds) != 1:
            raise ValidationError('A step is a task ("name") or one of "chain", "group", "chord"'
                                  f"; got {kinds or 'none of them'}.")
        if kinds[0] == "name":
            if "on_error" in data:
                raise ValidationError("Only a chain, group or chord takes on_error.", field_name="on_error")
        else:
            given = sorted(set(data) & set(TASK_FIELDS))
            if given:
                raise ValidationError(f"A {kinds[0]} takes no task fields {given}; put them on its steps.",
                                      field_name=given[0])
        if "on_error" in data and "name" not in data["on_error"]:
            raise ValidationError("An on_error step is a task step (with a name).", field_name="on_error")


class WorkflowIn(StepIn):
    """A whole workflow: a chain, group or chord, and what a failed step does to the others."""

    cancel_on_failure = JsonBoolean(load_default=True, metadata={
        "description": "when a step fails, cancel the unfinished ones (else they finish)"})

    @pre_load
    def not_too_deep(self, data, **kwargs):
        """Refuse a tree nested deeper than a workflow may be before reading it (reading it recurses)."""
        if _depth(data) > 2 * MAX_DEPTH + 2:
            raise ValidationError(f"chains, groups and chords nest at most {MAX_DEPTH} deep", field_name="_schema")
        return data

    @validates_schema
    def a_composite(self, data, **kwargs):
        if "name" in data:
            raise ValidationError('A workflow is a "chain", "group" or "chord"; submit one task to /api/tasks.',
                                  field_name="name")


def _depth(data):
    """How deep JSON objects and arrays nest in data (without recursing)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if depth > 4 * MAX_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


class WorkflowQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(WORKFLOW_STATES))


class StepCounts(Schema):
    total = fields.Integer(required=True, metadata={"description": "task steps (error callbacks not counted)"})
    waiting = fields.Integer(required=True, metadata={"description": "not started: what they wait for has not ended"})
    active = fields.Integer(required=True, metadata={"description": "their task is queued, reserved or running"})
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class WorkflowSummary(Schema):
    id = fields.Integer(required=True)
    status = fields.String(required=True, metadata={"description": ", ".join(WORKFLOW_STATES)})
    cancel_on_failure = fields.Boolean(required=True)
    failed_task = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_ID),
                                 metadata={"description": "the task whose failure failed it"})
    error = fields.String(allow_none=True)
    created_at = UtcDateTime(required=True)
    finished_at = UtcDateTime(allow_none=True)
    steps = fields.Nested(StepCounts, required=True)


class StepTaskOut(Schema):
    """The task a step runs now (a step run again by a retry runs a new one)."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True)
    progress = fields.Integer(required=True)
    message = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    attempts = fields.Integer(required=True)
    started_at = UtcDateTime(allow_none=True)
    finished_at = UtcDateTime(allow_none=True)


class StepOut(Schema):
    kind = fields.String(required=True, metadata={"description": "task, chain, group or chord"})
    path = fields.String(required=True, metadata={"description": 'where it is in the tree, e.g. "chord.group[2]"'})
    status = fields.String(required=True, metadata={"description": ", ".join(STEP_STATES)})
    name = fields.String(metadata={"description": "a task step's task"})
    args = fields.Raw()
    options = fields.Raw()
    task = fields.Nested(StepTaskOut, allow_none=True, metadata={"description": "null until the step starts"})
    steps = fields.List(fields.Nested(lambda: StepOut()),
                        metadata={"description": "a composite's steps; a chord's are its group and its callback"})
    on_error = fields.Nested(lambda: StepOut(), allow_none=True)


class WorkflowOut(WorkflowSummary):
    tree = fields.Nested(StepOut, required=True)
    tasks = fields.List(fields.Integer(), required=True,
                        metadata={"description": "the tasks its steps run now, in tree order"})


class WorkflowStarted(Schema):
    id = fields.Integer(required=True)
    status = fields.String(required=True)
    tasks = fields.List(fields.Integer(), required=True,
                        metadata={"description": "the tasks started now, in tree order (later steps start "
                                                 "when what they wait for ends)"})
