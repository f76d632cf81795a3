"""What every runner does on its heartbeat besides leases: keep counts rolled up, old tasks pruned."""
import datetime as dt
import logging
import time

from db import runners, session_scope, stats

log = logging.getLogger(__name__)

PRUNE_BATCH = 500  # tasks deleted per transaction, so no lock is held for long
WORK_PER_BEAT = 1.0  # seconds of roll-up and pruning one heartbeat may spend


def keep_tables(retention):
    """Roll up finished counts, then delete tasks finished more than retention seconds ago.

    Each step is its own short transaction, and a step another process is
    doing is left to it (stats.roll_up, stats.prune_finished). Returns how
    many tasks were deleted.
    """
    deadline = time.monotonic() + WORK_PER_BEAT
    while time.monotonic() < deadline:
        with session_scope() as session:
            if not stats.roll_up(session):
                break
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
    return pruned
