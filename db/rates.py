"""Rate limits' bookkeeping: the log of rate-limited starts, and what of a key's rate is in use.

A rate-limited task starts only in a transaction that holds its key's task_limits
row and finds fewer than its limit of the key's logged starts still counting (a
start counts until its time plus the window); the same transaction logs its start.
So no window of that length ever holds more starts than the limit. Claims read
the same log to leave alone the tasks that could not start yet.
"""
import datetime as dt

from sqlalchemy import bindparam, case, delete, func, select, text, union_all

from db.dialects import dialect_of
from db.models import QUEUED, RESERVED, UNFINISHED_STATES, Task, TaskLimit, TaskRateStart

_c = Task.__table__.c
# Every rate-limited task has a limit_key too: asking for one lets ix_tasks_limit (status,
# limit_key; on SQLite and PostgreSQL only limited rows) serve, not a scan of the table.
_RATE_LIMITED = (_c.limit_key.is_not(None), _c.rate_key.is_not(None))
_starts = TaskRateStart.__table__
_s = _starts.c
_KEY = bindparam("rate_key")
_NOW = bindparam("now", type_=_s.counts_until.type)
_COUNTING = select(func.count()).where(_s.rate_key == _KEY, _s.counts_until > _NOW)
_OPENING = (select(_s.counts_until).where(_s.rate_key == _KEY, _s.counts_until > _NOW)
            .order_by(_s.counts_until).offset(bindparam("skip")).limit(1))


_KEYS = bindparam("rate_keys", expanding=True)
_COUNTING_BY_KEY = (select(_s.rate_key, func.count().label("n"))
                    .where(_s.rate_key.in_(_KEYS), _s.counts_until > _NOW).group_by(_s.rate_key))
_RESERVED_BY_KEY = (select(_c.rate_key, func.count().label("n"))
                    .where(_c.status == RESERVED, *_RATE_LIMITED, _c.rate_key.in_(_KEYS)).group_by(_c.rate_key))
_BOTH = union_all(_COUNTING_BY_KEY, _RESERVED_BY_KEY).subquery()
# Built once: a claim's limited step asks every time (building them anew cost more than running them).
_USED_BY = select(_BOTH.c.rate_key, func.sum(_BOTH.c.n)).group_by(_BOTH.c.rate_key)
_NEXT_OPENING = select(func.min(_s.counts_until)).where(_s.rate_key.in_(_KEYS), _s.counts_until > _NOW)


def opening(session, rate_key, limit, now):
    """Take the key's turn (its row locked till the transaction ends); None if a start fits now,
    else when the next one will."""
    session.execute(dialect_of(session).insert_or_keep(TaskLimit.__table__),
                    [{"limit_key": rate_key, "created_at": now}])
    connection = session.connection()
    counting = connection.execute(_COUNTING, {"rate_key": rate_key, "now": now}).scalar()
    if counting < limit:
        return None
    # Fits once all but limit - 1 of the counting starts have stopped counting.
    return connection.execute(_OPENING, {"rate_key": rate_key, "now": now, "skip": counting - limit}).scalar()


def log_start(session, rate_key, window, now):
    """Count a start of the key's from now for window seconds (after opening() said it fits)."""
    session.connection().execute(_starts.insert(), {"rate_key": rate_key,
                                                    "counts_until": now + dt.timedelta(seconds=window)})


def used_by(session, rate_keys, now):
    """{rate key: its starts still counting plus its tasks reserved to start} for these keys: a
    claim takes no more of a key than its limit minus what is used."""
    if not rate_keys:
        return {}
    return {key: int(used) for key, used in session.execute(_USED_BY, {"rate_keys": sorted(rate_keys), "now": now})}


def next_opening(session, now, rate_keys):
    """The earliest time a logged start of these keys stops counting, or None: a claim may then find room."""
    return session.scalar(_NEXT_OPENING, {"rate_keys": sorted(rate_keys), "now": now})


def prune(session, now, batch=1000):
    """Delete up to batch logged starts that no longer count; return how many went."""
    ids = list(session.scalars(select(_s.id).where(_s.counts_until <= now).limit(batch)))
    if ids:
        session.execute(delete(TaskRateStart).where(TaskRateStart.id.in_(ids)).execution_options(
            synchronize_session=False))
    return len(ids)


def usage(session, now, keys=None, most=50):
    """Rate keys with unfinished tasks (or these keys), the most waiting first: each one's limit,
    its starts still counting, and its tasks reserved to start and queued."""
    query = (select(_c.rate_key, func.min(_c.rate_limit).label("starts"), func.min(_c.rate_window).label("seconds"),
                    func.sum(case((_c.status == QUEUED, 1), else_=0)).label("queued"),
                    func.sum(case((_c.status == RESERVED, 1), else_=0)).label("reserved"))
             .where(_c.status.in_(UNFINISHED_STATES), *_RATE_LIMITED)
             .group_by(_c.rate_key).order_by(text("queued DESC"), _c.rate_key).limit(most))
    if keys is not None:
        query = query.where(_c.rate_key.in_(list(keys)))
    rows = session.execute(query).all()
    counting = dict(session.execute(
        select(_s.rate_key, func.count()).where(_s.rate_key.in_([row.rate_key for row in rows]),
                                                 _s.counts_until > now).group_by(_s.rate_key)).all()) if rows else {}
    return [_in_use(row, counting.get(row.rate_key, 0), session, now) for row in rows]


def _in_use(row, started, session, now):
    full = started + int(row.reserved) >= row.starts
    room_at = None
    if full and started:  # the earliest logged start to stop counting frees a place
        room_at = session.scalar(select(func.min(_s.counts_until)).where(_s.rate_key == row.rate_key,
                                                                            _s.counts_until > now))
    return {"key": row.rate_key, "starts": row.starts, "seconds": row.seconds, "started": started,
            "reserved": int(row.reserved), "queued": int(row.queued), "full": full, "room_at": room_at}


def with_rates(session, tasks, now):
    """Set each task's `rate`: its rate limit's use (usage()), and whether it waits for room
    (a queued task, due, whose key is full), or None for a task without a rate limit."""
    keys = {task.rate_key for task in tasks if task.rate_key is not None}
    found = {use["key"]: use for use in usage(session, now, keys, most=len(keys))} if keys else {}
    for task in tasks:
        use = found.get(task.rate_key) if task.rate_key is not None else None
        if task.rate_key is not None and use is None:  # its key has no unfinished task left
            use = {"key": task.rate_key, "starts": task.rate_limit, "seconds": task.rate_window,
                   "started": None, "reserved": 0, "queued": 0, "full": False, "room_at": None}
        task.rate = None if use is None else {
            **use, "waiting": task.status == QUEUED and task.run_after <= now and use["full"]}
    return tasks
