"""Which due limited tasks fit now: their limit key's free slots and their rate key's room.

Decided in Python from three small reads, not in one ranking statement (MariaDB ran
that one's joins once per waiting row: a third of a second with 2,000 waiting):
1. the keys with due limited tasks, with their limits (`keys_waiting`);
2. what each key holds (reserved and running tasks) and what of each rate is used (Room.read);
3. each open key's first rows in claim order, no more than the most any key has room for
   (FirstOfKeys); Room.pick then takes them in claim order while their keys have room.
"""
import dataclasses
import time

from sqlalchemy import bindparam, func, select, union_all

from db import rates
from db.models import CLAIM_ORDER, HELD_STATES, Task

_c = Task.__table__.c
_KEYS = bindparam("keys", expanding=True)


def keys_waiting(where):
    """(limit_key, rate_key, concurrency, rate_limit) of the rows matching where."""
    return (select(_c.limit_key, _c.rate_key, func.min(_c.concurrency).label("concurrency"),
                   func.min(_c.rate_limit).label("rate_limit"))
            .where(*where).group_by(_c.limit_key, _c.rate_key))


def read_keys_waiting(session, statement, params):
    """keys_waiting's rows, read now."""
    return session.execute(statement, params).all()


class KeysWaiting:
    """keys_waiting's rows, read again once `fresh_for` seconds old or after forget(): a
    claimer takes the limited step at every opening of a rate, and grouping the whole
    backlog each time cost more than the rest of the step. A key first queued meanwhile
    waits up to that long (a submit in this process makes the claimer forget at once);
    what fits is decided fresh each time (Room.read), so no limit is ever passed."""

    def __init__(self, fresh_for):
        self.fresh_for = fresh_for
        self._kept = (None, -float("inf"))  # (rows, when read); one tuple: claims on many threads

    def __call__(self, session, statement, params):
        rows, read_at = self._kept
        now = time.monotonic()
        if rows is None or now - read_at >= self.fresh_for:
            rows = read_keys_waiting(session, statement, params)
            self._kept = (rows, now)
        return rows

    def forget(self):
        self._kept = (None, -float("inf"))


class FirstOfKeys:
    """Reads the rows matching where of given limit keys, at most cap of each, in claim order:
    (id, limit_key, rate_key, priority, run_after, *columns).

    Each key is its own LIMIT read on ix_tasks_limit, so a key's backlog is read no
    further than its first rows (ranking every waiting row cost milliseconds with
    2,000 waiting); up to CHUNK keys go in one statement, built once per size.
    """

    CHUNK = 32

    def __init__(self, where, *columns):
        self._where = where
        self._columns = columns
        self._statements = {}

    def rows(self, session, params, keys, cap):
        """The rows of keys (at most cap each) in claim order."""
        rows = []
        for start in range(0, len(keys), self.CHUNK):
            chunk = keys[start:start + self.CHUNK]
            keyed = {f"key_{i}": key for i, key in enumerate(chunk)}
            rows += session.execute(self._statement(len(chunk)), {**params, **keyed, "cap": cap}).all()
        if len(keys) > self.CHUNK:
            rows.sort(key=lambda row: (-row.priority, row.run_after, row.id))
        return rows

    def _statement(self, size):
        if size not in self._statements:
            firsts = [select(_c.id, _c.limit_key, _c.rate_key, _c.priority, _c.run_after, *self._columns)
                      .where(*self._where, _c.limit_key == bindparam(f"key_{i}"))
                      .order_by(*CLAIM_ORDER).limit(bindparam("cap")).subquery()
                      for i in range(size)]
            each = union_all(*(select(first) for first in firsts)).subquery()
            self._statements[size] = select(each).order_by(each.c.priority.desc(), each.c.run_after, each.c.id)
        return self._statements[size]


_HELD = (select(_c.limit_key, func.count())
         .where(_c.status.in_(HELD_STATES), _c.limit_key.in_(_KEYS))
         .group_by(_c.limit_key))


@dataclasses.dataclass
class Room:
    """Free slots per limit key (None: no concurrency limit) and room per rate key, now."""

    slots: dict
    rates: dict

    @classmethod
    def read(cls, session, groups, now):
        """The room of the keys in groups (rows of keys_waiting)."""
        concurrency, rate_limits = {}, {}
        for group in groups:  # a key's limit is the lowest its waiting tasks declare (a deploy may change it)
            concurrency[group.limit_key] = _lowest(concurrency.get(group.limit_key), group.concurrency)
            if group.rate_key is not None:
                rate_limits[group.rate_key] = _lowest(rate_limits.get(group.rate_key), group.rate_limit)
        held = dict(session.execute(_HELD, {"keys": sorted(concurrency)}).all())
        used = rates.used_by(session, set(rate_limits), now)
        slots = {key: None if limit is None else limit - held.get(key, 0) for key, limit in concurrency.items()}
        room = {key: limit - used.get(key, 0) for key, limit in rate_limits.items()}
        return cls(slots, room)

    def full_rates(self):
        """The rate keys with no room left."""
        return sorted(key for key, left in self.rates.items() if left <= 0)

    def _fits(self, limit_key, rate_key):
        slots = self.slots.get(limit_key)
        return (slots is None or slots > 0) and (rate_key is None or self.rates.get(rate_key, 0) > 0)

    def open_keys(self, groups):
        """The limit keys among groups with a free slot and (for some of their rows) rate room."""
        return sorted({group.limit_key for group in groups if self._fits(group.limit_key, group.rate_key)})

    def cap(self, groups, most):
        """The most rows any one key of groups can take now (at most `most`): no more of a key need be read."""
        bound = {}
        for group in groups:
            slots = self.slots.get(group.limit_key)
            room = most if group.rate_key is None else self.rates.get(group.rate_key, 0)
            fits = min(most, room, most if slots is None else slots)
            bound[group.limit_key] = max(bound.get(group.limit_key, 0), fits)
        return max([1, *bound.values()])

    def pick(self, rows, most, offered=lambda row: True):
        """The ids of rows (in claim order) that fit, taking each one's room: up to most of
        those offered(row); a row not offered (already handed out) takes its room all the same."""
        ids = []
        for row in rows:
            if len(ids) >= most:
                break
            if not self._fits(row.limit_key, row.rate_key):
                continue
            if self.slots.get(row.limit_key) is not None:
                self.slots[row.limit_key] -= 1
            if row.rate_key is not None:
                self.rates[row.rate_key] -= 1
            if offered(row):
                ids.append(row.id)
        return ids


def _lowest(a, b):
    return b if a is None else a if b is None else min(a, b)
