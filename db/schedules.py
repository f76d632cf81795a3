"""Recurring tasks' slots: each slot of a schedule is taken once, by whichever scheduler comes first."""
from sqlalchemy import select, update

from db.dialects import dialect_of
from db.models import TaskSchedule, utcnow


def start(session, name, slot):
    """Make name's row if it has none, as if slot (the latest before now) were taken:
    a new schedule waits for its next slot."""
    session.execute(dialect_of(session).insert_or_keep(TaskSchedule.__table__),
                    {"name": name, "last_slot": slot, "last_task_id": None, "changed_at": utcnow()})


def take_slot(session, name, slot):
    """Move name's last slot forward to slot; True if this call did (then queue its task)."""
    return session.execute(
        update(TaskSchedule).where(TaskSchedule.name == name, TaskSchedule.last_slot < slot)
        .values(last_slot=slot, changed_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount == 1


def set_task(session, name, task_id):
    """Say which task was queued for name's last slot."""
    session.execute(update(TaskSchedule).where(TaskSchedule.name == name)
                    .values(last_task_id=task_id).execution_options(synchronize_session=False))


def rows(session):
    """{name: TaskSchedule} of every schedule that ever ran a scheduler."""
    return {row.name: row for row in session.scalars(select(TaskSchedule))}
