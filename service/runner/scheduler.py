"""The scheduler: queues each slot of every recurring task once, whichever processes run it.

Every process that runs tasks ticks it each poll interval. A slot is taken by
moving the schedule's last_slot forward in the database (db.schedules), in the
transaction that queues the slot's task, so two schedulers that reach one
slot queue one task, and a rollback gives the slot back. Only the newest slot
at or before now is ever looked at: after downtime a missed slot runs once,
late, not once per missed slot.
"""
import logging

from db import schedules, session_scope
from db.models import utcnow
from service.runner import submit, task_rows
from service.runner.registry import registry

log = logging.getLogger(__name__)


class Scheduler:
    """Queues the recurring tasks' slots as they come (enabled: SCHEDULES_ENABLED)."""

    def __init__(self, enabled, tz, tasks=registry):
        self.enabled = enabled
        self.tz = tz
        self.tasks = tasks  # the registry whose recurring tasks it queues
        self._taken = {}  # name -> the newest slot this process knows to be taken

    def tick(self, now=None):
        """Queue the task of each schedule whose newest slot nobody has taken yet."""
        if not self.enabled:
            return
        now = now or utcnow()
        for spec in self.tasks.scheduled():
            slot = spec.schedule.latest(now, self.tz)
            known = self._taken.get(spec.name)
            if known is not None and known >= slot:
                continue
            try:
                self._take(spec, slot)
            except Exception:
                log.warning("schedule %s: could not queue the slot %s; trying again",
                            spec.name, slot.isoformat(), exc_info=True)

    def _take(self, spec, slot):
        """Take slot for spec's schedule and queue its task, both in one transaction."""
        with session_scope() as session:
            if spec.name not in self._taken:  # first look here: a new schedule starts at its next slot
                schedules.start(session, spec.name, slot)
            task = None
            if schedules.take_slot(session, spec.name, slot):
                task_rows.backlog.check(session)  # QueueFull: the slot stays free, tried again
                task = submit.insert_allowed(session, spec, spec.schedule.args, due=slot)  # wakes runners
                schedules.set_task(session, spec.name, task.id)
        self._taken[spec.name] = slot
        if task is not None:
            log.info("schedule %s: queued task %s for %s", spec.name, task.id, slot.isoformat())


def list_schedules(session, tz, now=None, tasks=None):
    """Each recurring task as a dict: its schedule, arguments, last run and next slot."""
    now = now or utcnow()
    taken = schedules.rows(session)
    listed = []
    for spec in (tasks or registry).scheduled():
        row = taken.get(spec.name)
        ran = row is not None and row.last_task_id is not None  # (a new row only marks the start)
        listed.append({
            "name": spec.name, "schedule": spec.schedule.describe(), "cron": spec.schedule.cron,
            "every": spec.schedule.every, "args": spec.schedule.args, "queue": spec.queue,
            "timezone": str(tz), "last_run_at": row.last_slot if ran else None,
            "last_task_id": row.last_task_id if ran else None,
            "next_run_at": spec.schedule.following(now, tz),
        })
    return listed
