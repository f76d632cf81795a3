"""Task functions registered by name; only registered names can ever run."""
import dataclasses
import importlib

from marshmallow import Schema, ValidationError

from db.models import DEFAULT_QUEUE
from db.queues import check_queue_name
from service.runner.limits import RateLimit, check_concurrency, check_fair, check_rate, key_of
from service.runner.recurrence import Schedule, check_schedule


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
    queue: str = DEFAULT_QUEUE  # the queue its tasks wait in (a Celery queue of that name with Celery)
    priority: int = 0  # its tasks' priority unless a submit says otherwise; higher runs first
    concurrency: int | None = None  # at most this many of its tasks (per key) run at once
    concurrency_key: str | None = None  # an argument: the limit holds per value of it
    schedule: Schedule | None = None  # when it recurs by itself (cron= or every=)
    rate: RateLimit | None = None  # at most rate.count starts in any rate.window seconds (per key)
    rate_key: str | None = None  # an argument: the rate limit holds per value of it
    fair_key: str | None = None  # an argument: its tasks take turns per value of it

    def limit_key(self, stored_args):
        """The key the limited claim takes its tasks under: its concurrency key, else its rate
        key (None: neither limit)."""
        if self.concurrency is not None:
            return key_of(self.name, self.schema, self.concurrency_key, stored_args)
        return self.rate_key_for(stored_args)

    def rate_key_for(self, stored_args):
        """The key a rate-limited task's starts are counted under (None: no rate limit)."""
        if self.rate is None:
            return None
        return key_of(self.name, self.schema, self.rate_key, stored_args)

    def fair_key_for(self, stored_args):
        """The key a fair task takes its turns under (None: not a fair task)."""
        if self.fair_key is None:
            return None
        return key_of(self.name, self.schema, self.fair_key, stored_args)

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
        self._limited = False  # a claim looks for limited tasks only if one is registered
        self._fair = False  # and for fair tasks only if one is

    def task(self, name, schema, max_attempts=3, time_limit=None, retry_on=(), queue=DEFAULT_QUEUE,
             priority=0, concurrency=None, concurrency_key=None, cron=None, every=None, args=None,
             rate_limit=None, rate_key=None, fair_key=None):
        """Register the decorated function fn(ctx, **args) under name.

        retry_on: exception types (a tuple) after which the task gets another
        attempt with backoff while attempts remain; any other exception fails
        it at once. Transient database errors always get one. queue: where its
        tasks wait (a process serves the queues in TASK_QUEUES). priority: the
        default of its submits, higher runs first. concurrency: at most this
        many of its tasks run at once across all processes, or per value of the
        argument concurrency_key if given. rate_limit ("10/s", "100/m", "5/h",
        "3/10s"): at most that many of its tasks start in any window of that
        length, across all processes, or per value of the argument rate_key.
        fair_key (an argument): among due tasks of one priority, claims take the
        values of that argument in turn, so one value's backlog does not hold up
        the others (not with concurrency or rate_limit).
        cron (an expression, in SCHEDULE_TZ) or every (seconds): it also recurs
        by itself, with args (checked now).
        """
        retry_on = tuple(retry_on) if isinstance(retry_on, (tuple, list)) else (retry_on,)
        if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on):
            raise TypeError(f"task {name!r}: retry_on takes exception classes, got {retry_on!r}")
        check_queue_name(queue)
        check_priority(priority)
        check_concurrency(name, schema, concurrency, concurrency_key)
        rate = check_rate(name, schema, rate_limit, rate_key)
        check_fair(name, schema, fair_key, concurrency, rate_limit)
        schedule = check_schedule(name, cron, every, args)

        def register(fn):
            if name in self._specs and self._specs[name].fn is not fn:
                raise ValueError(f"task {name!r} is already registered")
            spec = TaskSpec(name, fn, schema(), max_attempts, time_limit, retry_on, queue, priority,
                            concurrency, concurrency_key, rate=rate, rate_key=rate_key, fair_key=fair_key)
            if schedule is not None:
                try:  # stored as it will be submitted, so a bad one fails here, not at 3 a.m.
                    args = spec.normalize_args(schedule.args)
                except InvalidArguments as error:
                    raise ValueError(f"task {name!r}: its schedule's args are invalid: "
                                     f"{error.messages}") from None
                spec = dataclasses.replace(spec, schedule=dataclasses.replace(schedule, args=args))
            self._specs[name] = spec
            self._limited = self._limited or concurrency is not None or rate is not None
            self._fair = self._fair or fair_key is not None
            fn.s = lambda **args: Signature(name, args)  # a workflow step: fn.s(**args)
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

    def has_limits(self):
        """True if a registered task has a concurrency or rate limit."""
        return self._limited

    def has_fair(self):
        """True if a registered task shares its queue fairly by key."""
        return self._fair

    def scheduled(self):
        """The specs of the tasks that recur, by name."""
        return [self._specs[name] for name in self.names() if self._specs[name].schedule]

    def queues(self, served=None):
        """The queues registered tasks wait in, and those served (TASK_QUEUES), sorted."""
        return sorted({spec.queue for spec in self._specs.values()} | {DEFAULT_QUEUE} | set(served or ()))


@dataclasses.dataclass(frozen=True)
class Signature:
    """A task step: a registered task's name, its arguments and its submit options."""

    name: str
    args: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)

    def set(self, **options):
        """The same step with these submit options (delay, priority, max_attempts, time_limit)."""
        return dataclasses.replace(self, options={**self.options, **options})


PRIORITIES = range(-100, 101)  # higher runs first


def check_priority(priority):
    """Raise ValueError unless priority is an int in -100..100."""
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        raise ValueError(f"a priority is a whole number from -100 to 100, got {priority!r}")
    return priority


registry = TaskRegistry()
task = registry.task


def load_task_modules(settings):
    """Import service.jobs and the modules named in TASK_MODULES, which register their tasks."""
    for name in ("service.jobs", *settings["TASK_MODULES"]):
        importlib.import_module(name)
