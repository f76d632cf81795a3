"""The processes that run tasks, as each one records itself on its heartbeat."""
import datetime as dt

from sqlalchemy import delete, select, update

from db.models import RunnerRecord, utcnow

FORGET_AFTER = dt.timedelta(hours=1)  # a lost process stays listed this long


def record_runner(session, owner, host, pid, workers, busy, now=None):
    """Say that owner is alive with busy of its workers busy (insert on its first heartbeat)."""
    now = now or utcnow()
    seen = session.execute(
        update(RunnerRecord).where(RunnerRecord.owner == owner)
        .values(busy=busy, workers=workers, heartbeat_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if not seen:
        session.add(RunnerRecord(owner=owner, host=host, pid=pid, workers=workers, busy=busy,
                                 started_at=now, heartbeat_at=now))
        session.flush()


def forget_runner(session, owner):
    """Remove a runner that stopped cleanly."""
    session.execute(delete(RunnerRecord).where(RunnerRecord.owner == owner))


def forget_lost_runners(session, now=None):
    """Remove runners silent for longer than FORGET_AFTER."""
    now = now or utcnow()
    return session.execute(
        delete(RunnerRecord).where(RunnerRecord.heartbeat_at < now - FORGET_AFTER)).rowcount


def list_runners(session, lease_seconds, now=None):
    """Every recorded runner as a dict, with lost=True when its heartbeat is older than the lease."""
    now = now or utcnow()
    lost_before = now - dt.timedelta(seconds=lease_seconds)
    rows = session.scalars(select(RunnerRecord).order_by(RunnerRecord.started_at)).all()
    return [dict(owner=r.owner, host=r.host, pid=r.pid, workers=r.workers, busy=r.busy,
                 started_at=r.started_at, heartbeat_at=r.heartbeat_at,
                 lost=r.heartbeat_at < lost_before) for r in rows]
