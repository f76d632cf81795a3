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
_PUBLISH_COLUMNS = (_c.id, _c.queue, _c.priority, _c.run_after, _c.fair_place)
# The fair tasks a relay hands to the broker: the first due ones in turn order, no more, so
# a key that comes later (its turns at the head) waits behind at most these for its turn.
FAIR_AHEAD = 32
_FAIR_WAITING = select(_c.id).where(_c.status == QUEUED, _c.fair_place.is_not(None)).limit(1)


def _set_published(session, task_ids, when):
    if task_ids:
        session.execute(_SET_PUBLISHED, {"ids": list(task_ids), "when": when})


def take_unpublished(session, limit, republish_after, grace, now=None):
    """Mark due queued tasks published and return [(id, queue)]: those never published
    (grace seconds after they became due, so a publish in flight is not doubled) and
    those published more than republish_after seconds ago and still not claimed
    (republish_after=None: not those); never those of a paused queue or of a
    limit key that has all its tasks running; highest priority first. Of fair tasks,
    those among the first FAIR_AHEAD in turn order.

    Relays running at once take different rows (the Dialect's take: locked rows or one
    statement); a row taken twice anyway is claimed once.
    """
    now = now or utcnow()
    stale = (_c.published_at < now - dt.timedelta(seconds=republish_after),) if republish_after is not None else ()
    unpublished = or_(_c.published_at.is_(None) & (_c.run_after <= now - dt.timedelta(seconds=grace)), *stale)
    # Limited and plain rows apart, each read on its own index: the limited ones that fit
    # (no more than limit), then plain ones to make up the limit, published in claim order.
    rows = []
    fitting_ids = _fitting_limited(session, now, unpublished, limit)
    if fitting_ids:
        limited = (*claims.due_terms(now), unpublished, _c.id.in_(fitting_ids))
        rows = _take(session, select(*_PUBLISH_COLUMNS).where(*limited), limited, now)
    if len(rows) < limit:
        plain = (*claims.due_terms(now), unpublished, _c.fair_place.is_(None), _c.limit_key.is_(None))
        rows = sorted(rows + _take(session, select(*_PUBLISH_COLUMNS).where(*plain).order_by(*CLAIM_ORDER)
                                   .limit(limit - len(rows)), plain, now),
                      key=lambda row: (-row.priority, row.run_after, row.id))
    if len(rows) < limit:
        rows += _take_fair_turns(session, now, stale, min(FAIR_AHEAD, limit - len(rows)))
    return [(row.id, row.queue) for row in rows]


def _take_fair_turns(session, now, stale, most):
    """Mark published those of the first `most` due fair tasks in turn order that are not out
    (never published: fair tasks are not published at commit, so no grace; or stale)."""
    turns = session.scalars(select(_c.id).where(*claims.due_terms(now), _c.fair_place.is_not(None))
                            .order_by(_c.fair_place, _c.id).limit(most)).all()
    if not turns:
        return []
    fair = (*claims.due_terms(now), _c.id.in_(turns), or_(_c.published_at.is_(None), *stale))
    return _take(session, select(*_PUBLISH_COLUMNS).where(*fair), fair, now)


def fair_waiting(session):
    """True while a fair task is queued: a relay looks more often then, to hand over the next turns."""
    return session.execute(_FAIR_WAITING).first() is not None


def _take(session, pick, where, now):
    """Mark the rows pick reads published (where: its terms, checked again); return them in its order."""
    taking = Taking(
        **claims.update_picked(pick.with_only_columns(_c.id).with_for_update(skip_locked=True), where,
                               {"published_at": now}, _PUBLISH_COLUMNS),
        pick=pick.with_for_update(skip_locked=True), mark=_SET_PUBLISHED)
    rows = dialect_of(session).take(session.connection(), taking, {"when": now})
    # RETURNING has no order
    return sorted(rows, key=lambda row: (row.fair_place or 0, -row.priority, row.run_after, row.id))


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
    first_of_keys = fitting.FirstOfKeys(where, case((unpublished, True), else_=False).label("offered"))
    rows = first_of_keys.rows(session, {}, keys, room.cap(groups, 2 * limit))
    return room.pick(rows, limit, offered=lambda row: row.offered)
