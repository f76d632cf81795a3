"""What a workflow is made of: task signatures, chains, groups and chords, checked before any write.

    chord(group(resize.s(path=p) for p in paths), build_album.s(), on_error=alert.s())

A step receives what came before it as the keyword `results` when its task's schema
declares that argument: a chain step a list of one, the previous step's result; a chord's
callback its members' results in member order; a group's members, each, what the group
received. An on_error step receives `failure` ({"task_id", "name", "error"}) when its
schema declares it. A group's result is its members' results in order; a chain's or a
chord's is its last step's.
"""
import dataclasses

from service.runner.registry import InvalidArguments, Signature, check_priority, registry

MAX_STEPS = 10_000  # task steps in one workflow
MAX_DEPTH = 32  # composites nested in one another
OPTIONS = ("delay", "priority", "max_attempts", "time_limit")


class InvalidWorkflow(ValueError):
    """A workflow that cannot be submitted; path names the step (e.g. "chord.group[2]")."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclasses.dataclass(frozen=True)
class Chain:
    """Steps one after another, each started by the commit that ends the one before."""

    steps: tuple
    on_error: Signature | None = None


@dataclasses.dataclass(frozen=True)
class Group:
    """Steps at once; done when every one is."""

    steps: tuple
    on_error: Signature | None = None


@dataclasses.dataclass(frozen=True)
class Chord:
    """A group, then one step that receives its members' results."""

    group: Group
    then: object
    on_error: Signature | None = None


def chain(*steps, on_error=None):
    return Chain(_steps(steps), on_error)


def group(*steps, on_error=None):
    """group(a, b) or group(generator of steps)."""
    return Group(_steps(steps), on_error)


def chord(header, then, on_error=None):
    """chord(group(...) or an iterable of steps, then)."""
    return Chord(header if isinstance(header, Group) else Group(tuple(header)), then, on_error)


def signature(name, args=None, **options):
    """A step of the task registered under name."""
    return Signature(name, dict(args or {}), options)


def _steps(steps):
    if len(steps) == 1 and not isinstance(steps[0], (Signature, Chain, Group, Chord)):
        return tuple(steps[0])  # one iterable of steps
    return tuple(steps)


def is_workflow(value):
    return isinstance(value, (Chain, Group, Chord))


@dataclasses.dataclass
class Planned:
    """A checked step, ready to insert: its kind, task spec (task steps) and steps in order."""

    kind: str
    spec: dict | None = None
    steps: list = dataclasses.field(default_factory=list)
    on_error: "Planned | None" = None

    def starting(self):
        """How many tasks start when this step does."""
        if self.kind == "task":
            return 1
        if self.kind == "group":
            return sum(step.starting() for step in self.steps)
        return self.steps[0].starting()  # a chain's first step, a chord's group


def plan(root):
    """Check a whole workflow before anything is written; return its Planned tree.

    Raises InvalidWorkflow naming the first bad step.
    """
    if not is_workflow(root):
        raise InvalidWorkflow("workflow", "a workflow is a chain, group or chord")
    count = [0]
    return _plan(root, _kind(root), count, 1)


def _kind(step):
    return {Signature: "task", Chain: "chain", Group: "group", Chord: "chord"}.get(type(step))


def _plan(step, path, count, depth):
    kind = _kind(step)
    if kind is None:
        raise InvalidWorkflow(path, f"a step is a task signature, chain, group or chord, got {type(step).__name__}")
    if kind == "task":
        count[0] += 1
        if count[0] > MAX_STEPS:
            raise InvalidWorkflow(path, f"a workflow has at most {MAX_STEPS} task steps")
        return Planned("task", spec=_task_spec(step, path))
    if depth > MAX_DEPTH:
        raise InvalidWorkflow(path, f"chains, groups and chords nest at most {MAX_DEPTH} deep")
    if kind == "chord":
        steps = [_plan(step.group, f"{path}.group", count, depth + 1),
                 _plan(step.then, f"{path}.then", count, depth + 1)]
    else:
        if not step.steps:
            raise InvalidWorkflow(path, f"a {kind} needs at least one step")
        steps = [_plan(each, f"{path}[{n}]", count, depth + 1) for n, each in enumerate(step.steps)]
    on_error = None
    if step.on_error is not None:
        if not isinstance(step.on_error, Signature):
            raise InvalidWorkflow(f"{path}.on_error", "an on_error step is a task signature")
        on_error = Planned("task", spec=_task_spec(step.on_error, f"{path}.on_error"))
    return Planned(kind, steps=steps, on_error=on_error)


def _task_spec(step, path):
    """The stored spec of a task step: its name, checked arguments and options."""
    try:
        spec = registry.get(step.name)
        args = spec.normalize_args(step.args)
    except InvalidArguments as error:
        raise InvalidWorkflow(path, f"invalid arguments: {error.messages}") from None
    except LookupError as error:
        raise InvalidWorkflow(path, str(error)) from None
    unknown = sorted(set(step.options) - set(OPTIONS))
    if unknown:
        raise InvalidWorkflow(path, f"unknown options {unknown}; a step takes {', '.join(OPTIONS)}")
    options = {key: value for key, value in step.options.items() if value is not None}
    try:
        _check_options(options)
    except ValueError as error:
        raise InvalidWorkflow(path, str(error)) from None
    return {"name": step.name, "args": args, "options": options}


def _check_options(options):
    if "priority" in options:
        check_priority(options["priority"])
    for key in ("delay", "time_limit"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{key} is a number of seconds, 0 or more, got {value!r}")
    attempts = options.get("max_attempts")
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
        raise ValueError(f"max_attempts is a whole number, 1 or more, got {attempts!r}")
