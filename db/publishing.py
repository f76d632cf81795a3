"""What the Celery executor needs from the tasks table: which rows to publish, and marking them.

A broker only carries ids; the row stays the record. A delivered id is claimed
by db.claims.claim_delivered, the same conditional UPDATE as the thread pool's
claims, so a duplicate, late or stray delivery claims nothing.
"""
import datetime as dt

from sqlalchemy import bindparam, case, or_, select, update

from db import claims, fitting
from db.dialects import Taking, by_primary_key, dialect_of
from db.models import CLAIM_ORDER, QUEUED, Task, utcnow

_table = Task.__table__
_c = _table.c


def mark_published(session, task_ids):
    """Note that these tasks' ids are being handed to the broker."""
    _set_published(session, task_ids, utcnow())


def unmark_published(session, task_ids):
    """A publish failed: these tasks wait for a relay again."""
    _set_published(session, task_ids, None)


_SET_PUBLISHED = by_primary_key(
    update(_table).where(_c.id.in_(bindparam("ids", expanding=True)), _c.status == QUEUED)
    .values(published_at=bindparam("when", type_=_c.published_at.type)))
_PUBLISH_COLUMNS = (_c.id, _c.queue, _c.priority, _c.run_after)


def _set_published(session, task_ids, when):
    if task_ids:
        session.execute(_SET_PUBLISHED, {"ids": list(task_ids), "when": when})


def take_unpublished(session, limit, republish_after, grace, now=None):
    """Mark due queued tasks published and return [(id, queue)]: those never published
    (grace seconds after they became due, so a publish in flight is not doubled) and
    those published more than republish_after seconds ago and still not claimed
    (republish_after=None: not those); never those of a paused queue or of a
    limit key that has all its tasks running; highest priority first.

    Relays running at once take different rows (the Dialect's take: locked rows or one
    statement); a row taken twice anyway is claimed once.
    """
    now = now or utcnow()
    unpublished = _c.published_at.is_(None) & (_c.run_after <= now - dt.timedelta(seconds=grace))
    if republish_after is not None:
        unpublished = or_(unpublished, _c.published_at < now - dt.timedelta(seconds=republish_after))
    due = (*claims.due_terms(now), unpublished,
           or_(_c.limit_key.is_(None), _c.id.in_(_fitting_limited(session, now, unpublished, limit))))
    pick = select(*_PUBLISH_COLUMNS).where(*due).order_by(*CLAIM_ORDER).limit(limit)
    taking = Taking(
        **claims.update_picked(pick.with_only_columns(_c.id).with_for_update(skip_locked=True), due,
                               {"published_at": now}, _PUBLISH_COLUMNS),
        pick=pick.with_for_update(skip_locked=True), mark=_SET_PUBLISHED)
    rows = sorted(dialect_of(session).take(session.connection(), taking, {"when": now}),
                  key=lambda row: (-row.priority, row.run_after, row.id))  # RETURNING has no order
    return [(row.id, row.queue) for row in rows]


def _fitting_limited(session, now, unpublished, limit):
    """The ids of up to limit due limited tasks matching unpublished that fit their key's free
    slots and rate room, counting the ones ahead of them (published or not) as taken: no
    message a worker must send back."""
    where = [*claims.due_terms(now), _c.limit_key.is_not(None)]
    groups = session.execute(fitting.keys_waiting(where)).all()
    if not groups:
        return []
    room = fitting.Room.read(session, groups, now)
    keys = room.open_keys(groups)
    if not keys:
        return []
    # Rows handed out already take their room too: read up to twice the limit of each key.
    rows = session.execute(fitting.first_of_keys(where, case((unpublished, True), else_=False).label("offered")),
                           {"keys": keys, "cap": room.cap(groups, 2 * limit)})
    return room.pick(rows, limit, offered=lambda row: row.offered)
