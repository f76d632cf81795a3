"""What the Celery executor needs from the tasks table: claim one row by id, find rows to publish.

A broker only carries ids; the row stays the record. A delivered id is claimed
with the same fenced, conditional UPDATE as the thread pool's claims (only a
queued row that is due), so a duplicate, late or stray delivery claims nothing.
"""
import datetime as dt

from sqlalchemy import bindparam, or_, select, update

from db import limits
from db.dialect import by_primary_key, dialect_of
from db.models import QUEUED, RESERVED, Task, utcnow
from db.tasks import _CLAIM_COLUMNS, _CLAIM_VALUES, _PAUSED, Claim

_c = Task.__table__.c

_CLAIM_IDS = by_primary_key(
    update(Task.__table__)
    .where(_c.id.in_(bindparam("ids", expanding=True)), _c.status == QUEUED,
           _c.run_after <= bindparam("now", type_=_c.run_after.type),
           _c.queue.not_in(_PAUSED.scalar_subquery()), _c.limit_key.is_(None))
    .values(**_CLAIM_VALUES)
)
_CLAIMED_IDS = select(*_CLAIM_COLUMNS).where(
    _c.id.in_(bindparam("ids", expanding=True)), _c.owner == bindparam("v_owner"),
    _c.status == RESERVED, _c.heartbeat_at == bindparam("v_now", type_=_c.heartbeat_at.type)
).order_by(_c.id)


def claim_tasks(session, task_ids, owner):
    """Reserve for owner those of task_ids that are queued, due, not in a paused queue and
    (if limited) within their key's concurrency; return their Claims.

    The others (reserved, running, finished, not due, paused, at their limit, unknown) are
    not ours to run: a duplicate or stray delivery claims nothing.
    """
    now = utcnow()
    params = {"ids": list(task_ids), "now": now, "v_owner": owner, "v_now": now}
    taken = session.execute(_CLAIM_IDS, params).rowcount
    claims = [Claim(*row) for row in session.execute(_CLAIMED_IDS, params)] if taken else []
    if len(claims) < len(params["ids"]):
        rest = sorted(set(params["ids"]) - {claim.id for claim in claims})
        claims += limits.claim_limited(session, owner, len(rest), task_ids=rest)
    if len(claims) < len(params["ids"]):
        # Still queued: not due by this clock (another host's ran ahead, or a retry's delay),
        # its queue is paused or its key is at its limit. Unpublished again, so a relay sends
        # it when it can run, not CELERY_REPUBLISH_AFTER later.
        session.execute(by_primary_key(
            update(Task).where(Task.id.in_(params["ids"]), Task.status == QUEUED)
            .values(published_at=None).execution_options(synchronize_session=False)))
    return claims


def mark_published(session, task_ids):
    """Note that these tasks' ids are being handed to the broker."""
    _set_published(session, task_ids, utcnow())


def unmark_published(session, task_ids):
    """A publish failed: these tasks wait for a relay again."""
    _set_published(session, task_ids, None)


def _set_published(session, task_ids, when):
    if task_ids:
        session.execute(by_primary_key(
            update(Task).where(Task.id.in_(task_ids), Task.status == QUEUED)
            .values(published_at=when).execution_options(synchronize_session=False)))


def take_unpublished(session, limit, republish_after, grace, now=None):
    """Mark due queued tasks published and return [(id, queue)]: those never published
    (grace seconds after they became due, so a publish in flight is not doubled) and
    those published more than republish_after seconds ago and still not claimed
    (republish_after=None: not those); never those of a paused queue or of a
    limit key that has all its tasks running; highest priority first.

    Relays running at once take different rows (SKIP LOCKED on MySQL, RETURNING
    under SQLite's single writer); a row taken twice anyway is claimed once.
    """
    now = now or utcnow()
    unpublished = Task.published_at.is_(None) & (Task.run_after <= now - dt.timedelta(seconds=grace))
    if republish_after is not None:
        unpublished = or_(unpublished, Task.published_at < now - dt.timedelta(seconds=republish_after))
    due = (Task.status == QUEUED, Task.run_after <= now, unpublished,
           Task.queue.not_in(_PAUSED.scalar_subquery()),
           # A limited task only while it fits its key's free slots, counting the ones
           # ahead of it (published or not) as taken: no message a worker must send back.
           or_(Task.limit_key.is_(None), Task.id.in_(limits.fitting_ids(now))))
    pick = (select(Task.id).where(*due)
            .order_by(Task.priority.desc(), Task.run_after, Task.id).limit(limit))
    if dialect_of(session).claim_returning:
        rows = session.execute(
            update(Task).where(Task.id.in_(pick.scalar_subquery()), *due)
            .values(published_at=now).returning(Task.id, Task.queue, Task.priority, Task.run_after)
            .execution_options(synchronize_session=False)).all()
        rows.sort(key=lambda row: (-row.priority, row.run_after, row.id))  # RETURNING has no order
        return [(row.id, row.queue) for row in rows]
    rows = session.execute(pick.add_columns(Task.queue).with_for_update(skip_locked=True)).all()
    if rows:
        mark_published(session, [row.id for row in rows])
    return [(row.id, row.queue) for row in rows]
