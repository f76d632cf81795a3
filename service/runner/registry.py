"""Task functions registered by name; only registered names can ever run."""
import dataclasses
import importlib

from marshmallow import Schema, ValidationError


class UnknownTask(LookupError):
    """No task is registered under this name."""

    def __init__(self, name, known):
        super().__init__(f"unknown task {name!r}; known tasks: {', '.join(known) or 'none'}")
        self.name = name
        self.known = known


class InvalidArguments(ValueError):
    """A task's arguments failed its schema."""

    def __init__(self, messages):
        super().__init__(f"invalid task arguments: {messages}")
        self.messages = messages


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A registered task: its function, argument schema and defaults."""

    name: str
    fn: object
    schema: Schema
    max_attempts: int
    time_limit: float | None
    retry_on: tuple = ()  # exception types that get another attempt, with backoff

    def load_args(self, args):
        """Validate args against the schema; return the loaded values."""
        try:
            return self.schema.load(args if args is not None else {})
        except ValidationError as error:
            raise InvalidArguments(error.messages) from error

    def normalize_args(self, args):
        """Validate args and return them as plain JSON to store with the task."""
        return self.schema.dump(self.load_args(args))


class TaskRegistry:
    """Name -> TaskSpec."""

    def __init__(self):
        self._specs = {}

    def task(self, name, schema, max_attempts=3, time_limit=None, retry_on=()):
        """Register the decorated function fn(ctx, **args) under name.

        retry_on: exception types (a tuple) after which the task gets another
        attempt with backoff while attempts remain; any other exception fails
        it at once. Transient database errors always get one.
        """
        retry_on = tuple(retry_on) if isinstance(retry_on, (tuple, list)) else (retry_on,)
        if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on):
            raise TypeError(f"task {name!r}: retry_on takes exception classes, got {retry_on!r}")

        def register(fn):
            if name in self._specs and self._specs[name].fn is not fn:
                raise ValueError(f"task {name!r} is already registered")
            self._specs[name] = TaskSpec(name, fn, schema(), max_attempts, time_limit, retry_on)
            return fn

        return register

    def get(self, name):
        """Return the spec for name or raise UnknownTask."""
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTask(name, self.names()) from None

    def names(self):
        """Return the registered names, sorted."""
        return sorted(self._specs)


registry = TaskRegistry()
task = registry.task


def load_task_modules(settings):
    """Import service.jobs and the modules named in TASK_MODULES, which register their tasks."""
    for name in ("service.jobs", *settings["TASK_MODULES"]):
        importlib.import_module(name)
