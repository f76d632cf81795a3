"""A recurring task's schedule: a cron expression or an interval, and the time slots they give.

Slots are naive UTC datetimes, as the tasks table stores them; cron
expressions are read in the scheduler's time zone (SCHEDULE_TZ), intervals
count whole periods from the Unix epoch, so every process agrees on them.
"""
import dataclasses
import datetime as dt
import math

from cronsim import CronSim, CronSimError

EPOCH = dt.datetime(1970, 1, 1)
EVERY = (1, 366 * 86_400)  # seconds: an interval from a second to a year


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a task recurs (cron or every seconds) and the arguments it gets each time."""

    cron: str | None
    every: float | None
    args: dict

    def latest(self, now, tz):
        """The newest slot at or before now."""
        if self.every:
            periods = math.floor((now - EPOCH).total_seconds() / self.every)
            return EPOCH + dt.timedelta(seconds=periods * self.every)
        # The second is added in UTC: local time repeats an hour when clocks go back.
        after = _local(now.replace(microsecond=0) + dt.timedelta(seconds=1), tz)
        return _utc(next(CronSim(self.cron, after, reverse=True)))

    def following(self, now, tz):
        """The first slot after now."""
        if self.every:
            return self.latest(now, tz) + dt.timedelta(seconds=self.every)
        return _utc(next(CronSim(self.cron, _local(now, tz).replace(microsecond=0))))

    def describe(self):
        """The schedule as it was declared: the cron text, or "every N s"."""
        return self.cron if self.cron else f"every {self.every:g} s"


def _local(now, tz):
    return now.replace(tzinfo=dt.timezone.utc).astimezone(tz)


def _utc(when):
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def check_schedule(name, cron, every, args):
    """A Schedule for @task's cron/every/args (None if neither given); ValueError if wrong."""
    if cron is None and every is None:
        if args is not None:
            raise ValueError(f"task {name!r}: args are for a schedule (cron= or every=)")
        return None
    if cron is not None and every is not None:
        raise ValueError(f"task {name!r}: give cron or every, not both")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, (int, float)) \
                or not EVERY[0] <= every <= EVERY[1]:
            raise ValueError(f"task {name!r}: every is a number of seconds from 1 to "
                             f"{EVERY[1]:,}, got {every!r}")
        every = float(every)
    else:
        try:
            CronSim(cron, dt.datetime(2000, 1, 1))
        except (CronSimError, TypeError, AttributeError) as error:
            raise ValueError(f"task {name!r}: bad cron expression {cron!r}: {error}") from None
    if args is not None and not isinstance(args, dict):
        raise ValueError(f"task {name!r}: a schedule's args are a dict, got {args!r}")
    return Schedule(cron, every, args or {})
