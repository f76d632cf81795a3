"""Flow-control declarations: concurrency limits, rate limits and fair share, checked when a
task registers.

    @task("mail", schema=MailArgs, rate_limit="10/s", rate_key="customer_id")
    @task("report", schema=ReportArgs, fair_key="customer_id")

A rate limit is "N/s", "N/m", "N/h" or "N/Ts" ("N/Tm", "N/Th"): at most N starts in any
window of that length, across every process and both executors; with a key argument,
per value of it.
"""
import dataclasses
import hashlib
import json
import re

KEY_LENGTH = 200  # tasks.limit_key, tasks.rate_key, tasks.fair_key
CONCURRENCY = range(1, 10_001)
RATE_COUNTS = range(1, 1_000_001)
LONGEST_WINDOW = 86_400.0  # a day: the log of starts is kept that long
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smh])\s*")


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most count starts in any window of `window` seconds."""

    count: int
    window: float

    def __str__(self):
        return f"{self.count}/{self.window:g}s"


def parse_rate(name, text):
    """The RateLimit a declaration spells ("10/s", "100/m", "5/h", "3/10s"); ValueError naming the task."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"task {name!r}: rate_limit is 'N/s', 'N/m', 'N/h' or 'N/Ts' (e.g. '10/s', "
                         f"'3/10s'), got {text!r}")
    count, length, unit = int(match[1]), float(match[2] or 1), match[3]
    window = length * _UNITS[unit]
    if count not in RATE_COUNTS:
        raise ValueError(f"task {name!r}: a rate_limit allows 1 to 1000000 starts, got {text!r}")
    if not 0 < window <= LONGEST_WINDOW:
        raise ValueError(f"task {name!r}: a rate_limit's window is more than 0 and at most a day, got {text!r}")
    return RateLimit(count, window)


def check_rate(name, schema, rate_limit, rate_key):
    """The RateLimit declared (None if none); ValueError naming the task for a bad declaration."""
    if rate_key is not None:
        if rate_limit is None:
            raise ValueError(f"task {name!r}: rate_key needs a rate_limit")
        _check_argument(name, schema, "rate_key", rate_key)
    return None if rate_limit is None else parse_rate(name, rate_limit)


def check_concurrency(name, schema, concurrency, concurrency_key):
    """Raise ValueError unless concurrency is None or 1..10000 and concurrency_key names an argument."""
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency not in CONCURRENCY):
        raise ValueError(f"task {name!r}: concurrency is a whole number from 1 to 10000, "
                         f"got {concurrency!r}")
    if concurrency_key is not None:
        if concurrency is None:
            raise ValueError(f"task {name!r}: concurrency_key needs a concurrency")
        _check_argument(name, schema, "concurrency_key", concurrency_key)


def check_fair(name, schema, fair_key, concurrency, rate_limit):
    """Raise ValueError unless fair_key is None or names an argument of a task with no limit.

    A limited task is taken in its limit key's order (its slots and its rate decide), so
    a fair turn could not be kept: a per-key rate_key or concurrency_key shares instead.
    """
    if fair_key is None:
        return
    if concurrency is not None or rate_limit is not None:
        raise ValueError(f"task {name!r}: fair_key cannot be combined with concurrency or rate_limit "
                         f"(a per-key concurrency_key or rate_key shares a limit by key)")
    _check_argument(name, schema, "fair_key", fair_key)


def _check_argument(name, schema, option, argument):
    if not isinstance(argument, str) or argument not in schema().fields:
        raise ValueError(f"task {name!r}: {option} {argument!r} is not one of its arguments")


def key_of(name, schema, argument, stored_args):
    """The key a limit counts under: the task's name, or with an argument, per value of it."""
    if argument is None:
        return name
    field = schema.fields[argument]
    value = json.dumps(stored_args.get(field.data_key or argument), sort_keys=True, separators=(",", ":"))
    key = f"{name}:{value}"
    if len(key) > KEY_LENGTH:  # a long value: its digest keeps keys distinct
        key = f"{name}#{hashlib.sha256(value.encode()).hexdigest()}"
    return key
