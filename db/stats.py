"""How many tasks are where: counts for the API, the dashboard and metrics, kept cheap at 10⁶ rows.

Finished tasks are counted once into task_totals (per name and status) and
task_minutes (per minute, for the last hour's chart) by roll_up(), up to a
watermark two minutes behind the clock; a count is then those few rows plus
the tasks that finished after the watermark, read through the finish-time
index. roll_up() and prune_finished() both move the one task_rollup row
first: its row lock lets one process at a time change the totals, and a
process that finds it moved leaves the work to the one that moved it.
"""
import collections
import datetime as dt

from sqlalchemy import bindparam, case, delete, func, select, true, update

from db import rates, runners, workflows
from db.dialects import dialect_of
from db.models import (FINISHED_STATES, HELD_STATES, QUEUED, STATES, UNFINISHED_STATES, Task,
                       TaskMinute, TaskRollup, TaskTotal, utcnow)

# A finish is stamped before its transaction commits (after up to SQLite's 30 s
# busy wait): roll up only minutes that every such commit has surely reached.
ROLLUP_MARGIN = dt.timedelta(minutes=2)
ROLLUP_STEP = dt.timedelta(minutes=10)  # the most one transaction folds in
MINUTES_KEPT = dt.timedelta(hours=2)
MINUTE = dt.timedelta(minutes=1)


def floor_minute(when):
    """The start of when's minute."""
    return when.replace(second=0, microsecond=0)


def _rolled(session, query, **params):
    """The watermark and the rows of a roll-up table, read in one statement so they agree."""
    rows = _read(session, query, params).all()
    if not rows:
        raise LookupError("task_rollup is empty: run the migrations (alembic upgrade head)")
    return rows[0][0], [row[1:] for row in rows if row[1] is not None]


def _read(session, query, params=None):
    """Run a prebuilt read on the session's connection: Core, past the ORM's result machinery
    (the overview runs seven of them per request, a dashboard polls it)."""
    return session.connection().execute(query, params or {})


def _rolled_query(table, *columns, where=true()):
    return (select(TaskRollup.rolled_until, *columns)
            .select_from(TaskRollup).outerjoin(table, where).where(TaskRollup.id == 1))


_FINISHED_STATES = Task.status.in_(FINISHED_STATES)
_TOTALS = _rolled_query(TaskTotal, TaskTotal.name, TaskTotal.status, TaskTotal.count)
# Grouped by status first: grouped by name first, SQLite reads the whole table through
# ix_tasks_name_id (0.4 s at 10⁶ rows) instead of the few recent rows through the finish index.
_FINISHED_SINCE = (select(Task.status, Task.name, func.count())
                   .where(Task.finished_at >= bindparam("since"), _FINISHED_STATES)
                   .group_by(Task.status, Task.name))
_MINUTES = _rolled_query(TaskMinute, TaskMinute.minute, TaskMinute.status, TaskMinute.count,
                         where=TaskMinute.minute >= bindparam("first"))
_IN_MINUTE = (select(Task.status, func.count())
              .where(Task.finished_at >= bindparam("start"), Task.finished_at < bindparam("end"),
                     _FINISHED_STATES)
              .group_by(Task.status))
_HELD_NAMES = {status: select(Task.name).where(Task.status == status) for status in HELD_STATES}
_DUE = Task.run_after <= bindparam("now")
_QUEUE_DEPTH = (select(func.count(), func.sum(case((_DUE, 1), else_=0)),
                       func.min(case((_DUE, Task.run_after))))
                .where(Task.status == QUEUED))


def _by_status_and_name(status, named):
    """Counts of one status per name (of one name if named)."""
    where = (Task.status == status, Task.name == bindparam("name")) if named else (Task.status == status,)
    return select(Task.status, Task.name, func.count()).where(*where).group_by(Task.status, Task.name)


_COUNTS = {(status, named): _by_status_and_name(status, named)
           for status in UNFINISHED_STATES for named in (False, True)}


def finished_counts(session):
    """Counter {(name, status): n} of every finished task in the table."""
    since, totals = _rolled(session, _TOTALS)
    counts = collections.Counter({(name, status): n for name, status, n in totals})
    for status, name, n in _read(session, _FINISHED_SINCE, {"since": since}):
        counts[(name, status)] += n
    return +counts  # totals of tasks since pruned away can reach 0


def unfinished_counts(session, name=None):
    """Counter {(name, status): n} of queued, reserved and running tasks (bounded by the backlog)."""
    named = {"name": name} if name is not None else {}
    queued = _read(session, _COUNTS[QUEUED, bool(named)], named)
    counts = collections.Counter({(row_name, status): n for status, row_name, n in queued})
    for status in HELD_STATES:
        def grouped(status=status):
            held = _read(session, _COUNTS[status, bool(named)], named)
            return {(row_name, row_status): n for row_status, row_name, n in held}

        def names(status=status):
            return ((row_name, status) for row_name in _read(session, _HELD_NAMES[status]).scalars()
                    if name is None or row_name == name)

        counts.update(dialect_of(session).count_held(grouped, names))
    return counts


def count_tasks(session, status=None, name=None):
    """How many tasks match a list filter, without counting a million rows."""
    counts = collections.Counter() if status in UNFINISHED_STATES else finished_counts(session)
    if status is None or status in UNFINISHED_STATES:
        counts.update(unfinished_counts(session, name))
    return sum(n for (row_name, row_status), n in counts.items()
               if (status is None or row_status == status) and (name is None or row_name == name))


def finished_per_minute(session, now=None, minutes=60):
    """[(minute, {status: n})] for the last `minutes` minutes, oldest first."""
    now = now or utcnow()
    first = floor_minute(now) - (minutes - 1) * MINUTE
    since, rolled = _rolled(session, _MINUTES, first=first)
    series = {first + i * MINUTE: collections.Counter() for i in range(minutes)}
    for minute, status, n in rolled:
        if minute in series:
            series[minute][status] += n
    minute = max(first, since)
    while minute <= floor_minute(now):  # the minutes not rolled up yet: a few at most
        series[minute].update(dict(_read(session, _IN_MINUTE,
                                         {"start": minute, "end": minute + MINUTE}).all()))
        minute += MINUTE
    return sorted(series.items())


def _move_watermark(session, since, until):
    """Move the watermark from since to until (or hold it there); False if another process moved it first."""
    return session.execute(
        update(TaskRollup).where(TaskRollup.id == 1, TaskRollup.rolled_until == since)
        .values(rolled_until=until)
        .execution_options(synchronize_session=False)).rowcount == 1


def _watermark(session):
    return session.scalar(select(TaskRollup.rolled_until).where(TaskRollup.id == 1))


def _add_total(session, name, status, n):
    """Add n (or subtract) to one total; the caller holds the roll-up row."""
    changed = session.execute(
        update(TaskTotal).where(TaskTotal.name == name, TaskTotal.status == status)
        .values(count=TaskTotal.count + n)
        .execution_options(synchronize_session=False)).rowcount
    if not changed:
        session.add(TaskTotal(name=name, status=status, count=n))


def roll_up(session, now=None):
    """Fold tasks finished up to two minutes ago into the totals, one step; True if it did.

    The caller commits. A step covers at most ROLLUP_STEP of finishes after
    skipping empty time, so one call after a long pause catches up quickly.
    """
    now = now or utcnow()
    target = floor_minute(now - ROLLUP_MARGIN)
    since = _watermark(session)
    if since is None or since >= target:
        return False
    first = session.scalar(select(func.min(Task.finished_at)).where(
        Task.finished_at >= since, Task.finished_at < target))
    until = target if first is None else min(target, floor_minute(first) + ROLLUP_STEP)
    if not _move_watermark(session, since, until):
        return False
    if first is None:
        return True
    window = (Task.finished_at >= since, Task.finished_at < until, Task.status.in_(FINISHED_STATES))
    for name, status, n in session.execute(
            select(Task.name, Task.status, func.count()).where(*window)
            .group_by(Task.name, Task.status)).all():
        _add_total(session, name, status, n)
    minute = max(floor_minute(first), floor_minute(now) - MINUTES_KEPT)
    while minute < until:
        for status, n in session.execute(
                select(Task.status, func.count())
                .where(*window, Task.finished_at >= minute, Task.finished_at < minute + MINUTE)
                .group_by(Task.status)).all():
            session.add(TaskMinute(minute=minute, status=status, count=n))
        minute += MINUTE
    session.execute(delete(TaskMinute).where(TaskMinute.minute < floor_minute(now) - MINUTES_KEPT))
    session.flush()
    return True


def prune_finished(session, older_than, batch=500, now=None):
    """Delete up to batch tasks that finished more than older_than ago; return how many.
    A workflow's tasks stay while it runs, and go once it ended that long ago (prune_workflows).

    Only rolled-up tasks are deleted, and their counts leave the totals in the
    same transaction (the caller commits), so every count stays exact.
    """
    now = now or utcnow()
    since = _watermark(session)
    if since is None or not _move_watermark(session, since, since):
        return 0
    cutoff = min(now - older_than, since)
    rows = session.execute(
        select(Task.id, Task.name, Task.status)
        .where(Task.finished_at < cutoff, Task.status.in_(FINISHED_STATES), ~workflows.kept_for(cutoff))
        .order_by(Task.finished_at).limit(batch)).all()
    if not rows:
        return 0
    session.execute(delete(Task).where(Task.id.in_([row.id for row in rows]))
                    .execution_options(synchronize_session=False))
    for (name, status), n in collections.Counter((row.name, row.status) for row in rows).items():
        _add_total(session, name, status, -n)
    return len(rows)


def prune_workflows(session, older_than, batch=500, now=None):
    """Delete up to batch workflows that ended more than older_than ago once prune_finished has
    taken their tasks; return how many."""
    return workflows.prune_ended(session, (now or utcnow()) - older_than, batch)


def reset_counts(session):
    """Forget every count (the caller empties the tasks table in the same transaction)."""
    while True:  # hold the roll-up row, waiting out a roll-up in progress
        since = _watermark(session)
        if since is None or _move_watermark(session, since, since):
            break
    session.execute(delete(TaskTotal))
    session.execute(delete(TaskMinute))


def queue_depth(session, now=None):
    """(queued, due now, when the oldest due task became due or None): one read of the claim index."""
    queued, due_now, oldest = _read(session, _QUEUE_DEPTH, {"now": now or utcnow()}).one()
    return queued, int(due_now or 0), oldest  # MySQL sums to a Decimal


def overview(session, lease_seconds, now=None):
    """Everything the dashboard's overview shows, as plain values."""
    now = now or utcnow()
    counts = finished_counts(session)
    counts.update(unfinished_counts(session))
    by_name = collections.defaultdict(lambda: dict.fromkeys(STATES, 0))
    for (name, status), n in counts.items():
        by_name[name][status] = n
    queued, due, oldest_due = queue_depth(session, now)
    return {
        "statuses": {status: sum(n for (_, s), n in counts.items() if s == status)
                     for status in STATES},
        "names": [{"name": name, **by_name[name]} for name in sorted(by_name)],
        "queue": {"queued": queued, "due": due,
                  "oldest_due_age": (now - oldest_due).total_seconds() if oldest_due else None},
        "finished_per_minute": [{"minute": minute, **{s: per_status[s] for s in FINISHED_STATES}}
                                for minute, per_status in finished_per_minute(session, now)],
        "runners": runners.list_runners(session, lease_seconds, now),
        "rate_limits": rates.usage(session, now),
        "lease": lease_seconds,
        "generated_at": now,
    }
