"""Fair share: the turns of tasks that share the queue by key (@task(fair_key=...)).

A fair task's place (tasks.fair_place) is its priority's band, then its turn. A
key's next turn is the turn after its last queued task's, but never before the
first due fair task's of its priority (the head): a key with 10 tasks queued
behind one with 10,000 gets the head's turn, the next, and so on, so the fair
claim (db.claims), reading places in order, takes the keys in turn. Two
submits of one key at the same moment may be given the same turns: they share them.
"""
from sqlalchemy import and_, bindparam, func, or_, select

from db.models import QUEUED, Task

BAND = 1 << 40  # turns per priority: more than any queue will hold at once
_c = Task.__table__.c
_LOW = bindparam("low")
_IN_BAND = (_c.status == QUEUED, _c.fair_place >= _LOW, _c.fair_place < _LOW + BAND)
_HEAD = select(func.min(_c.fair_place)).where(*_IN_BAND, _c.run_after <= bindparam("now", type_=_c.run_after.type))
_LAST = select(func.max(_c.fair_place)).where(*_IN_BAND, _c.fair_key == bindparam("key"))


def band(priority):
    """The first place of a priority's band: higher priorities' bands come first."""
    return (100 - priority) * BAND


def turn(place):
    """A place's turn within its band."""
    return place % BAND


def give_places(session, rows, now):
    """Set fair_place on each row (insert values) that has a fair_key, in their order."""
    heads, following = {}, {}
    for row in rows:
        if row.get("fair_key") is None:
            continue
        low = band(row["priority"])
        kept = (low, row["fair_key"])
        if kept not in following:
            if low not in heads:
                heads[low] = session.scalar(_HEAD, {"low": low, "now": now})
            last = session.scalar(_LAST, {"low": low, "key": row["fair_key"]})
            head = low if heads[low] is None else heads[low]
            following[kept] = head if last is None else max(head, last + 1)
        row["fair_place"] = following[kept]
        following[kept] += 1
    return rows


def with_turns(session, tasks):
    """Set each fair task's `fair` (not a column) to {key, ahead}: ahead is how many queued fair
    tasks of its priority come before it in turn order (None unless it is queued)."""
    for task in tasks:
        if task.fair_key is None:
            continue
        ahead = None
        if task.status == QUEUED and task.fair_place is not None:
            low = task.fair_place - turn(task.fair_place)
            ahead = session.scalar(select(func.count()).where(
                _c.status == QUEUED, _c.fair_place >= low,
                or_(_c.fair_place < task.fair_place, and_(_c.fair_place == task.fair_place, _c.id < task.id))))
        task.fair = {"key": task.fair_key, "ahead": ahead}
    return tasks
