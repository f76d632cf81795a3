"""A process's claims: which claim steps to take, from what it declares and what waits."""
import time

from sqlalchemy import select

from db.claims import claim_due, claim_unlimited
from db.fitting import KeysWaiting
from db.models import QUEUED, Task, utcnow

_c = Task.__table__.c

_ANY_LIMITED_WAITING = select(_c.id).where(_c.status == QUEUED, _c.limit_key.is_not(None)).limit(1)
_ANY_FAIR_WAITING = select(_c.id).where(_c.status == QUEUED, _c.fair_place.is_not(None)).limit(1)


class _Lookout:
    """Whether tasks of a kind may wait: always while this process declares one, else as
    a lookup (at most every `every` seconds) found, so that rows queued under a
    declaration a deploy has since removed are still claimed."""

    def __init__(self, declared, waiting, every):
        self.declared = declared  # () -> bool
        self.waiting = waiting  # a SELECT of one such row
        self.every = every
        self._looked_at = -float("inf")
        self._found = False

    def may_wait(self, session):
        if self.declared():
            return True
        now = time.monotonic()
        if now - self._looked_at >= self.every:
            self._looked_at = now
            self._found = session.execute(self.waiting).first() is not None
        return self._found


class Claimer:
    """A process's claims: with the limited step while limited tasks may wait, and the fair
    step while fair ones may (see _Lookout).

    The limited step costs every claim a few statements: taken only when needed. After
    one that found every waiting key full, the next claims leave it out for `pause`
    seconds (or until a full rate key has room, if sooner), so tasks no limit governs
    are not slowed by a backlog that cannot run: a slot freed meanwhile is taken up to
    `pause` seconds later. A claim that finds a rate key full learns when it has room
    again (room_in), so its tasks wait for that room, not for the next poll. Which keys have tasks waiting it reads again every `keys_for`
    seconds, or at once after new_work() (see fitting.KeysWaiting).
    """

    def __init__(self, declares_limits, declares_fair=lambda: False, every=1.0, pause=0.1, keys_for=0.5):
        self.limited = _Lookout(declares_limits, _ANY_LIMITED_WAITING, every)
        self.keys_waiting = KeysWaiting(keys_for)
        self.fair = _Lookout(declares_fair, _ANY_FAIR_WAITING, every)
        self.pause = pause
        self._next_room = None  # when a full rate key the last claim met has room again
        self._limited_after = -float("inf")  # monotonic time before which the limited step is left out

    def claim(self, session, owner, limit, queues=None):
        """claim_due() if limited tasks may wait, else claim_unlimited()."""
        fair = self.fair.may_wait(session)
        if time.monotonic() >= self._limited_after and self.limited.may_wait(session):
            self._next_room = None
            return claim_due(session, owner, limit, queues, on_full=self._full, fair=fair,
                             keys_waiting=self.keys_waiting)
        return claim_unlimited(session, owner, limit, queues, fair=fair)

    def new_work(self):
        """Tasks were queued: the next limited step reads which keys wait afresh."""
        self.keys_waiting.forget()

    def _full(self, when, none_open):
        self._next_room = when
        if none_open:
            self._limited_after = time.monotonic() + min(self.pause, max(0.0, self._till_room()))

    def room_in(self):
        """Seconds till a rate limit may have room again: when to look without being woken (inf
        if none is counting, or once that time has passed: the next claim takes the limited
        step, and one with no free slot to claim for waits for a worker to free one; answering
        0 then kept a dispatcher claiming nothing in a loop)."""
        left = self._till_room()
        return left if left > 0 else float("inf")

    def _till_room(self):
        if self._next_room is None:
            return float("inf")
        return (self._next_room - utcnow()).total_seconds()
