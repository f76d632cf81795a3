"""Recurring tasks: declarations, slots, each slot queued once by many schedulers, missed slots."""
import datetime as dt
import threading
import zoneinfo

import pytest
from marshmallow import Schema, fields
from sqlalchemy import select

import db
from db.models import Task, TaskSchedule
from service.config import ConfigError, load_config
from service.runner import scheduler as scheduler_module
from service.runner.registry import TaskRegistry
from service.runner.recurrence import check_schedule
from service.runner.scheduler import Scheduler
from tests.conftest import FAST, count_rows, wait_for
from tests.server import Worker

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 30, 12, 0, 0)


class Report(Schema):
    kind = fields.String(required=True)


def recurring(**schedule):
    """A registry with one recurring task, "report"."""
    tasks = TaskRegistry()
    tasks.task("report", schema=Report, **schedule)(lambda ctx, kind: kind)
    return tasks


def queued_slots(session, name="report"):
    return list(session.scalars(select(Task.run_after).where(Task.name == name).order_by(Task.id)))


@pytest.mark.parametrize("schedule, message", [
    ({"cron": "0 3 * * *", "every": 60, "args": {"kind": "x"}}, "not both"),
    ({"every": 0, "args": {"kind": "x"}}, "from 1 to"),
    ({"every": "60", "args": {"kind": "x"}}, "from 1 to"),
    ({"every": True, "args": {"kind": "x"}}, "from 1 to"),
    ({"cron": "61 * * * *", "args": {"kind": "x"}}, "bad cron expression"),
    ({"cron": "every day", "args": {"kind": "x"}}, "bad cron expression"),
    ({"every": 60, "args": {"kind": 5}}, "schedule's args are invalid"),
    ({"every": 60}, "schedule's args are invalid"),  # kind is required
    ({"args": {"kind": "x"}}, "args are for a schedule"),
])
def test_a_bad_schedule_is_refused_where_the_task_is_declared(schedule, message):
    with pytest.raises(ValueError, match=message):
        recurring(**schedule)


def test_slots_of_an_interval_and_of_cron_in_a_time_zone():
    every = check_schedule("t", None, 30, {})
    assert every.latest(T0 + dt.timedelta(seconds=29.9), UTC) == T0
    assert every.following(T0 + dt.timedelta(seconds=29.9), UTC) == T0 + dt.timedelta(seconds=30)
    nightly = check_schedule("t", "0 3 * * *", None, {})
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")  # UTC+1 in winter
    assert nightly.latest(T0, UTC) == dt.datetime(2026, 11, 30, 3)
    assert nightly.latest(T0, berlin) == dt.datetime(2026, 11, 30, 2)
    assert nightly.following(T0, berlin) == dt.datetime(2026, 12, 1, 2)
    assert nightly.latest(dt.datetime(2026, 11, 30, 3), UTC) == dt.datetime(2026, 11, 30, 3)


def test_cron_in_a_time_zone_keeps_every_slot_of_the_hour_that_repeats_when_clocks_go_back():
    quarterly = check_schedule("t", "*/15 * * * *", None, {})
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")  # 25 Oct 2026, 01:00 UTC: 03:00 CEST -> 02:00 CET
    night = dt.datetime(2026, 10, 25, 0, 0, 5)
    slots = [quarterly.latest(night + dt.timedelta(minutes=m), berlin) for m in range(0, 180, 15)]
    assert slots == [dt.datetime(2026, 10, 25, 0, 0) + dt.timedelta(minutes=m) for m in range(0, 180, 15)]


def test_a_new_schedule_waits_for_its_next_slot_then_queues_each_slot_once(session):
    scheduler = Scheduler(True, UTC, recurring(every=10, args={"kind": "daily"}))
    scheduler.tick(T0 + dt.timedelta(seconds=3))
    assert queued_slots(session) == []
    for second in (10, 11, 19, 20):
        scheduler.tick(T0 + dt.timedelta(seconds=second))
    assert queued_slots(session) == [T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=20)]
    task = session.scalars(select(Task).where(Task.name == "report").order_by(Task.id.desc())).first()
    assert task.args == {"kind": "daily"} and task.status == "queued"
    row = session.get(TaskSchedule, "report")
    assert (row.last_slot, row.last_task_id) == (T0 + dt.timedelta(seconds=20), task.id)


def test_after_downtime_only_the_latest_missed_slot_runs_once(session):
    tasks = recurring(every=10, args={"kind": "daily"})
    Scheduler(True, UTC, tasks).tick(T0)
    Scheduler(True, UTC, tasks).tick(T0 + dt.timedelta(seconds=10))
    # Down for five slots; a process started afterwards (no memory of its own) catches up once.
    restarted = Scheduler(True, UTC, tasks)
    restarted.tick(T0 + dt.timedelta(seconds=65))
    restarted.tick(T0 + dt.timedelta(seconds=66))
    assert queued_slots(session) == [T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=60)]


def test_schedulers_racing_for_one_slot_queue_one_task(session):
    tasks = recurring(every=10, args={"kind": "daily"})
    Scheduler(True, UTC, tasks).tick(T0)
    schedulers = [Scheduler(True, UTC, tasks) for _ in range(8)]
    barrier = threading.Barrier(len(schedulers))

    def race(scheduler):
        barrier.wait()
        scheduler.tick(T0 + dt.timedelta(seconds=10))

    threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert queued_slots(session) == [T0 + dt.timedelta(seconds=10)]


def test_a_disabled_scheduler_queues_nothing(session):
    scheduler = Scheduler(False, UTC, recurring(every=10, args={"kind": "daily"}))
    scheduler.tick(T0)
    scheduler.tick(T0 + dt.timedelta(seconds=10))
    assert queued_slots(session) == [] and session.get(TaskSchedule, "report") is None


def test_a_full_backlog_leaves_the_slot_free_for_the_next_tick(session, monkeypatch):
    from service.runner import submit

    scheduler = Scheduler(True, UTC, recurring(every=10, args={"kind": "daily"}))
    scheduler.tick(T0)
    submit.configure(0)
    scheduler.tick(T0 + dt.timedelta(seconds=10))
    assert queued_slots(session) == []
    submit.configure(100)
    scheduler.tick(T0 + dt.timedelta(seconds=11))
    assert queued_slots(session) == [T0 + dt.timedelta(seconds=10)]


def test_the_api_and_the_cli_list_each_schedule_with_its_last_and_next_run(client, monkeypatch):
    tasks = recurring(cron="*/5 * * * *", args={"kind": "hourly"})
    monkeypatch.setattr(scheduler_module, "registry", tasks)
    now = dt.datetime.now(UTC).replace(tzinfo=None)
    Scheduler(True, UTC, tasks).tick(now - dt.timedelta(minutes=5))
    Scheduler(True, UTC, tasks).tick(now)
    response = client.get("/api/schedules")
    assert response.status_code == 200
    [listed] = response.get_json()
    assert listed["name"] == "report" and listed["schedule"] == "*/5 * * * *"
    assert listed["args"] == {"kind": "hourly"} and listed["timezone"] == "UTC"
    assert listed["last_task_id"] is not None and listed["last_run_at"].endswith("+00:00")
    slot = dt.datetime.fromisoformat(listed["last_run_at"]).replace(tzinfo=None)
    assert slot <= now < dt.datetime.fromisoformat(listed["next_run_at"]).replace(tzinfo=None)
    assert slot.minute % 5 == 0


@pytest.mark.parametrize("key, value", [("SCHEDULE_TZ", "Mars/Olympus"), ("SCHEDULES_ENABLED", "often")])
def test_bad_schedule_settings_name_the_setting(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config({key: value})


def beat_slots():
    with db.session_scope() as session:
        return queued_slots(session, "every_second")


def test_three_schedulers_queue_each_second_once_and_a_restart_runs_the_missed_slot_once(
        shared_db, tmp_path, processes):
    def worker(n):
        return Worker(shared_db, tmp_path / f"w{n}.log", TASK_WORKERS=2,
                      TASK_MODULES="tests.scheduled_tasks", **FAST).start()

    processes.extend(worker(n) for n in range(3))
    wait_for(lambda: len(beat_slots()) >= 1, message="the first slot")
    wait_for(lambda: len(beat_slots()) >= 10, timeout=30, message="ten seconds of slots")
    for process in processes:
        process.stop()
    slots = beat_slots()
    seconds = [(slot - slots[0]).total_seconds() for slot in slots]
    assert seconds == [float(n) for n in range(len(slots))]  # each slot once, none missing
    down_from = dt.datetime.now(UTC).replace(tzinfo=None)
    wait_for(lambda: dt.datetime.now(UTC).replace(tzinfo=None) > down_from + dt.timedelta(seconds=5),
             timeout=10, interval=0.1, message="five seconds down")
    processes.append(worker(3))
    wait_for(lambda: len(beat_slots()) > len(slots), message="a slot after the restart")
    after = beat_slots()[len(slots)]
    assert after >= down_from + dt.timedelta(seconds=4)  # the missed ones were not queued...
    assert beat_slots().count(after) == 1  # ...and the newest one was, once
    wait_for(lambda: count_rows(Task, Task.name == "every_second", Task.status == "succeeded")
             >= len(slots), message="the beats to run")
