"""What every runner does on its heartbeat besides leases: keep counts rolled up, old rows pruned."""
import datetime as dt
import logging
import time

from db import limits, rates, runners, session_scope, stats
from db.models import utcnow

log = logging.getLogger(__name__)

PRUNE_BATCH = 500  # rows deleted (or limit keys looked at) per transaction, so no lock is held for long
WORK_PER_BEAT = 1.0  # seconds of roll-up and pruning one heartbeat may spend


class RollupAndPrune:
    """One process's upkeep of the tables; keep() runs once per heartbeat."""

    def __init__(self):
        self._keys_after = None  # the limit key the sweep of idle ones goes on after

    def keep(self, retention):
        """Roll up finished counts, forget rate-limited starts that no longer count, delete
        tasks finished more than retention seconds ago, and look at the next batch of concurrency-limit keys for idle ones to delete.

        Each step is its own short transaction, and a step another process is
        doing is left to it (stats.roll_up, stats.prune_finished). Returns how
        many tasks were deleted.
        """
        deadline = time.monotonic() + WORK_PER_BEAT
        while time.monotonic() < deadline:
            with session_scope() as session:
                if not stats.roll_up(session):
                    break
        if time.monotonic() < deadline:  # starts that no longer count against a rate limit
            with session_scope() as session:
                rates.prune(session, utcnow(), PRUNE_BATCH)
        pruned = 0
        while retention and time.monotonic() < deadline:
            with session_scope() as session:
                deleted = stats.prune_finished(session, dt.timedelta(seconds=retention), PRUNE_BATCH)
                runners.forget_lost_runners(session)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                break
        if pruned:
            log.info("retention: deleted %d tasks finished more than %gs ago", pruned, retention)
        if retention and time.monotonic() < deadline:
            with session_scope() as session:
                ended = stats.prune_workflows(session, dt.timedelta(seconds=retention), PRUNE_BATCH)
            if ended:
                log.info("retention: deleted %d workflows ended more than %gs ago", ended, retention)
        if retention:
            # A key per user would otherwise leave a row per user forever; a whole pass
            # over the keys takes keys/PRUNE_BATCH beats.
            forgotten, self._keys_after = forget_idle_limit_keys(
                dt.timedelta(seconds=retention), self._keys_after)
            if forgotten:
                log.info("retention: deleted %d concurrency-limit keys made more than %gs ago "
                         "with no queued or running task", forgotten, retention)
        return pruned


def forget_idle_limit_keys(older_than, after=None):
    """Delete the idle limit keys among the next PRUNE_BATCH past after (db.limits.forget_idle_keys);
    return (how many went, the key to go on after, or None at the end)."""
    with session_scope() as session:
        return limits.forget_idle_keys(session, after, older_than, PRUNE_BATCH)
