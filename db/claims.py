"""Claims: which queued tasks are due, and reserving them for an owner or giving them back.

Every claim is one conditional UPDATE of queued rows to reserved, with the
owner and a fresh lease: two claimers racing for a row cannot both win, and a
duplicate or stray claim takes nothing. How a database runs that UPDATE (one
statement with RETURNING, or a locked read first) is its Dialect's `take`.

- claim_unlimited: the first due tasks that no limit governs: plain ones in claim order,
  fair ones (@task(fair_key=...)) in turn order (db.fairness), the two merged.
- claim_limited: due limited tasks, none beyond its key's free slots.
- claim_due: both, the first `limit` of them (the thread pool's claim).
- claim_delivered: the given ids, if due (a broker's deliveries).
- give_back: reserved tasks back to the queue, the claim not counted.
"""
import dataclasses
import datetime as dt

from sqlalchemy import bindparam, select, update

from db import fitting, rates, workflows
from db.dialects import Taking, by_primary_key, dialect_of
from db.attempt_writes import new_value
from db.models import CLAIM_ORDER, QUEUED, RESERVED, Task, TaskLimit, TaskQueue, utcnow


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a worker needs to run one attempt of a task: plain values, no ORM object."""

    id: int
    name: str
    args: dict
    attempt: int
    max_attempts: int
    time_limit: float | None
    cancel_requested: bool
    run_after: dt.datetime  # when it became due: its wait in the queue ends at its start
    priority: int = 0
    workflow_node: int | None = None  # the workflow step its end settles
    rate_key: str | None = None  # its rate limit's key: its start is counted there
    rate_limit: int | None = None  # starts allowed in any rate_window seconds
    rate_window: float | None = None
    fair_place: int | None = None  # a fair task's place in turn order
    # (workflow step, its parent) as the claim read them (with_steps); a step holds a dict
    step: tuple | None = dataclasses.field(default=None, compare=False, hash=False)

    def order(self):
        """Its place in claim order: highest priority, then earliest due, then oldest."""
        return -self.priority, self.run_after, self.id


# The statements are built once: reusing one statement object lets SQLAlchemy
# skip compiling it again for every claim.
_table = Task.__table__
_c = _table.c
_NOW = bindparam("now", type_=_c.run_after.type)
_IDS = bindparam("ids", expanding=True)
CLAIM_COLUMNS = (_c.id, _c.name, _c.args, _c.attempts, _c.max_attempts, _c.time_limit,
                 _c.cancel_requested, _c.run_after, _c.priority, _c.workflow_node,
                 _c.rate_key, _c.rate_limit, _c.rate_window, _c.fair_place)  # Claim's fields, in order
PAUSED = select(TaskQueue.name).where(TaskQueue.paused.is_(True))


def due_terms(now=_NOW):
    """The WHERE terms of a due task: queued, due by now, and not in a paused queue."""
    return [_c.status == QUEUED, _c.run_after <= now, _c.queue.not_in(PAUSED.scalar_subquery())]


# The lease starts at the claim; started_at waits for a worker (attempt_writes.start_task).
_RESERVE = dict(status=RESERVED, owner=new_value("owner"), attempts=_c.attempts + 1,
                started_at=None, heartbeat_at=bindparam("v_now", type_=_c.heartbeat_at.type))
_RESERVE_IDS = by_primary_key(update(_table).where(_c.id.in_(_IDS), _c.status == QUEUED)
                              .values(**_RESERVE))
_RESERVED_BY_US = (select(*CLAIM_COLUMNS)
                   .where(_c.id.in_(_IDS), _c.owner == new_value("owner"), _c.status == RESERVED,
                          _c.heartbeat_at == bindparam("v_now", type_=_c.heartbeat_at.type))
                   .order_by(*CLAIM_ORDER))


def with_steps(session, claims):
    """The claims, those of workflow steps with their step and its parent read in one go."""
    node_ids = [claim.workflow_node for claim in claims if claim.workflow_node is not None]
    if not node_ids:
        return claims
    found = workflows.steps_and_parents(session, node_ids)
    return [dataclasses.replace(claim, step=found.get(claim.workflow_node)) if claim.workflow_node is not None
            else claim for claim in claims]


def _as_reserved(row):
    """A due row read before its UPDATE, as the UPDATE left it: one more attempt."""
    return (*row[:3], row.attempts + 1, *row[4:])


def _unlimited_due(served):
    """The due plain rows (no limit, no fair key), in claim order; served: only the :queues list."""
    # limited tasks: claim_limited takes them; fair ones: _fair_due
    where = [*due_terms(), _c.limit_key.is_(None), _c.fair_place.is_(None)]
    if served:
        where.append(_c.queue.in_(bindparam("queues", expanding=True)))
    return (select(_c.id).where(*where).order_by(*CLAIM_ORDER).limit(bindparam("limit"))
            .with_for_update(skip_locked=True))  # where rows lock: claimers keep off each other's


def _fair_due(served):
    """The due fair rows in turn order (ix_tasks_fair serves it); served as _unlimited_due's."""
    where = [*due_terms(), _c.fair_place.is_not(None)]
    if served:
        where.append(_c.queue.in_(bindparam("queues", expanding=True)))
    return (select(_c.id).where(*where).order_by(_c.fair_place, _c.id).limit(bindparam("limit"))
            .with_for_update(skip_locked=True))


def update_picked(pick, where, values, columns):
    """The UPDATE ... RETURNING of the rows pick (a read of ids) names, as a Taking's
    `returning` and `returning_inline` (keyword arguments). In `returning` the pick is a
    common table expression, read once: PostgreSQL may rescan a plain `id IN (pick ... SKIP
    LOCKED)` while the UPDATE runs, and a rescan skips the rows the UPDATE has already
    changed, so it took more than the LIMIT (MATERIALIZED makes it read the pick once)."""
    def marking(ids):
        return by_primary_key(update(_table).where(_c.id.in_(ids), *where).values(**values).returning(*columns))
    picked = pick.cte("picked").prefix_with("MATERIALIZED", dialect="postgresql")
    return dict(returning=marking(select(picked.c.id)), returning_inline=marking(pick.scalar_subquery()))


def _taking(due):
    """The Taking that reserves the rows due (a read of ids) picks."""
    return Taking(**update_picked(due, [_c.status == QUEUED], _RESERVE, CLAIM_COLUMNS),
                  pick=due.with_only_columns(*CLAIM_COLUMNS), mark=_RESERVE_IDS, reread=_RESERVED_BY_US,
                  as_marked=_as_reserved)


# served (a queues list given) -> its Taking, built once
_UNLIMITED = {served: _taking(_unlimited_due(served)) for served in (False, True)}
_FAIR = {served: _taking(_fair_due(served)) for served in (False, True)}


def claim_unlimited(session, owner, limit, queues=None, fair=True):
    """Reserve up to limit due tasks that no limit governs for owner; return their Claims, the
    plain ones in claim order and the fair ones in turn order, merged. Only from queues (all
    if None); fair=False: no fair ones (none can be waiting).

    A reserved task waits for one of owner's workers; it is running only once
    attempt_writes.start_task marks it so.
    """
    now = utcnow()
    params = {"now": now, "limit": limit, "v_owner": owner, "v_now": now}
    if queues is not None:
        params["queues"] = list(queues)
    # Core statements on the session's connection: past the ORM's bulk-update machinery.
    take = dialect_of(session).take
    plain = sorted((Claim(*row) for row in take(session.connection(), _UNLIMITED[queues is not None], params)),
                   key=Claim.order)
    if not fair:
        return with_steps(session, plain)
    fair_ones = sorted((Claim(*row) for row in take(session.connection(), _FAIR[queues is not None], params)),
                       key=lambda claim: (claim.fair_place, claim.id))
    return with_steps(session, _first(session, owner, merged(plain, fair_ones), limit))


def merged(ones, others):
    """Two lists of Claims, each in its own order, as one: the head that comes first in
    claim order goes first (so fair claims keep their turn order among themselves)."""
    together, i, j = [], 0, 0
    while i < len(ones) and j < len(others):
        if others[j].order() < ones[i].order():
            together.append(others[j])
            j += 1
        else:
            together.append(ones[i])
            i += 1
    return together + ones[i:] + others[j:]


def _first(session, owner, claims, limit):
    """The first limit claims; those past it go back, unseen: this transaction has not committed."""
    give_back(session, [claim.id for claim in claims[limit:]], owner)
    return claims[:limit]


def _limited_statements(served, given):
    """(the keys of due limited rows with their limits, the first rows of open keys)."""
    where = [*due_terms(), _c.limit_key.is_not(None)]
    if served:
        where.append(_c.queue.in_(bindparam("queues", expanding=True)))
    if given:
        where.append(_c.id.in_(_IDS))
    return fitting.keys_waiting(where), fitting.FirstOfKeys(where)


_LIMITED = {(served, given): _limited_statements(served, given)
            for served in (False, True) for given in (False, True)}


def claim_limited(session, owner, limit, queues=None, task_ids=None, on_full=None,
                  keys_waiting=fitting.read_keys_waiting):
    """Reserve up to limit due limited tasks for owner, none beyond its key's concurrency or its
    rate key's room; return their Claims in claim order. queues: only those (all if None);
    task_ids: only those. on_full(when, none_open) hears of full keys, as this claim leaves
    them: when a full rate key's next logged start stops counting (None: no rate key is full),
    and whether no key has room. keys_waiting(session, statement, params) reads the keys
    with due tasks (a fitting.KeysWaiting may answer from a recent read).

    Claimers of one key take turns: each first writes the key's task_limits row
    (a row lock on MySQL, the write lock on SQLite) and only then counts its
    held rows. Nothing but reserved and running rows holds a slot, so a slot
    held by a process that died frees when lease recovery requeues its task.
    """
    now = utcnow()
    keys_of, first_of_keys = _LIMITED[queues is not None, task_ids is not None]
    params = {"now": now}
    if queues is not None:
        params["queues"] = list(queues)
    if task_ids is not None:
        params["ids"] = list(task_ids)
    groups = keys_waiting(session, keys_of, params)
    if not groups:
        return []
    # Take the keys' turns, in one order everywhere so two claimers cannot deadlock.
    session.execute(dialect_of(session).insert_or_keep(TaskLimit.__table__),
                    [{"limit_key": key, "created_at": now} for key in sorted({g.limit_key for g in groups})])
    room = fitting.Room.read(session, groups, now)
    keys = room.open_keys(groups)
    ids = room.pick(first_of_keys.rows(session, params, keys, room.cap(groups, limit)), limit) if keys else []
    if on_full is not None:  # as this claim leaves them: a claim that takes the last room pauses the next
        full_rates, none_open = room.full_rates(), not room.open_keys(groups)
        if full_rates or none_open:
            on_full(rates.next_opening(session, now, full_rates) if full_rates else None, none_open)
    if not ids:
        return []
    reserved = {"ids": ids, "v_owner": owner, "v_now": now}
    session.execute(_RESERVE_IDS, reserved)
    return with_steps(session, [Claim(*row) for row in session.execute(_RESERVED_BY_US, reserved)])


_GIVE_BACK = by_primary_key(
    update(_table).where(_c.id.in_(_IDS), _c.owner == bindparam("v_owner"), _c.status == RESERVED)
    .values(status=QUEUED, owner=None, attempts=_c.attempts - 1))


def give_back(session, task_ids, owner):
    """Put tasks owner reserved in this transaction back in the queue, the claim not counted."""
    if task_ids:
        dialect_of(session).hush_requeues(session)  # nobody else need look: they were never out
        session.execute(_GIVE_BACK, {"ids": list(task_ids), "v_owner": owner})


def claim_due(session, owner, limit, queues=None, on_full=None, fair=True,
              keys_waiting=fitting.read_keys_waiting):
    """Reserve the first limit due tasks, limited or not, in claim order (fair ones in turn
    order); return their Claims. on_full and keys_waiting as claim_limited takes them, fair
    as claim_unlimited."""
    unlimited = claim_unlimited(session, owner, limit, queues, fair=fair)
    limited = claim_limited(session, owner, limit, queues, on_full=on_full, keys_waiting=keys_waiting)
    if not limited:
        return unlimited
    return _first(session, owner, merged(unlimited, limited), limit)


_DELIVERED = by_primary_key(
    update(_table).where(_c.id.in_(_IDS), *due_terms(), _c.limit_key.is_(None)).values(**_RESERVE))


_UNPUBLISH = by_primary_key(update(_table).where(_c.id.in_(_IDS), _c.status == QUEUED)
                            .values(published_at=None))


def claim_delivered(session, task_ids, owner):
    """Reserve for owner those of task_ids that are due and (if limited) within their key's
    concurrency; return their Claims.

    The others (reserved, running, finished, not due, paused, at their limit, unknown) are
    not ours to run: a duplicate or stray delivery claims nothing.
    """
    now = utcnow()
    params = {"ids": list(task_ids), "now": now, "v_owner": owner, "v_now": now}
    taken = session.execute(_DELIVERED, params).rowcount
    claims = with_steps(session, [Claim(*row) for row in session.execute(_RESERVED_BY_US, params)]) if taken else []
    if len(claims) < len(params["ids"]):
        rest = sorted(set(params["ids"]) - {claim.id for claim in claims})
        claims += claim_limited(session, owner, len(rest), task_ids=rest)
    if len(claims) < len(params["ids"]):
        # Still queued: not due by this clock (another host's ran ahead, or a retry's delay),
        # its queue is paused or its key is at its limit. Unpublished again, so a relay sends
        # it when it can run, not CELERY_REPUBLISH_AFTER later.
        session.execute(_UNPUBLISH, params)
    return claims


def claims_ride_in_commits(session):
    """True where a claim is best made inside a finishing task's commit: the database lets
    one transaction write at a time (SQLite), which that commit already holds."""
    return dialect_of(session).one_writer
