"""States mean what they say: reserved is not running, a time limit is a failure."""
import datetime as dt

from sqlalchemy import update

import db
from db import claims, attempt_writes, tasks
from db.models import RunnerRecord, Task, utcnow
from db.session import session_factory
from service.runner import TaskContext, TimeLimitExceeded, TaskCancelled
from tests.conftest import (count_rows, enqueue, server_only, queue_rows, statuses_counted, task_row,
                            wait_finished, wait_for, wait_status)
from tests.sample_tasks import STOPS

def submit(client, task_name, **args):
    response = client.post("/api/tasks", json={"name": task_name, "args": args})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def metric(client, line_start):
    """The value of the first /metrics line that starts with line_start."""
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(line_start)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_a_task_claimed_ahead_is_reserved_not_running_and_cancels_at_once(make_app):
    client = make_app(TASK_WORKERS=1, TASK_PREFETCH=2).test_client()
    first, second, third = (submit(client, "sleepy", seconds=60, name=f"s{n}") for n in range(3))
    wait_for(lambda: statuses_counted([first, second, third]) == {"running": 1, "reserved": 2},
             message="one running, two reserved")
    running = client.get(f"/api/tasks/{first}").get_json()
    assert running["status"] == "running" and running["started_at"] is not None
    for waiting in (second, third):
        body = client.get(f"/api/tasks/{waiting}").get_json()
        assert (body["status"], body["started_at"]) == ("reserved", None)
    statuses = client.get("/api/stats").get_json()["statuses"]
    assert (statuses["running"], statuses["reserved"], statuses["queued"]) == (1, 2, 0)
    assert metric(client, 'tasks_running{name="sleepy"}') == 1
    assert metric(client, 'tasks_reserved{name="sleepy"}') == 2
    wait_for(lambda: count_rows(RunnerRecord, RunnerRecord.busy == 1), message="the runner's record")
    # A reserved task is cancelled at once (200, not "asked to stop"), and was no attempt.
    response = client.post(f"/api/tasks/{second}/cancel")
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    row = task_row(second)
    assert (row.status, row.attempts, row.started_at) == ("cancelled", 0, None)
    # The running one stops; only then does the last one start, and its start is that moment.
    assert client.post(f"/api/tasks/{first}/cancel").status_code == 202
    stopped = wait_status(first, "cancelled")
    started = wait_status(third, "running")
    assert started.started_at >= stopped.finished_at
    assert wait_status(second, "cancelled").attempts == 0  # its worker skipped it, nothing ran
    client.post(f"/api/tasks/{third}/cancel")
    wait_status(third, "cancelled")
    assert count_rows(Task, Task.name == "sleepy", Task.attempts == 1) == 2


def test_a_reserved_task_of_a_lost_process_goes_back_to_its_place_in_line(database, session):
    ids = [tasks.insert_task(session, "noop", {}).id for _ in range(3)]
    session.commit()
    taken = claims.claim_unlimited(session, "lost:1:a", 2)
    session.commit()
    assert [claim.id for claim in taken] == ids[:2]
    due_before = task_row(ids[0]).run_after
    session.execute(update(Task).where(Task.status == "reserved")
                    .values(heartbeat_at=utcnow() - dt.timedelta(seconds=60)))
    session.commit()
    assert attempt_writes.recover_expired(session, 30) == (2, 0)
    session.commit()
    row = task_row(ids[0])
    assert (row.status, row.owner, row.attempts, row.run_after) == ("queued", None, 0, due_before)
    assert attempt_writes.start_task(session, taken[0], "lost:1:a") == attempt_writes.GONE  # the lost process cannot start it
    assert [claim.id for claim in claims.claim_unlimited(session, "alive:1:b", 3)] == ids


def test_a_task_stopped_by_its_time_limit_fails_saying_so(runner):
    task_id = enqueue(runner, "sleepy", {"seconds": 20, "name": "late"}, time_limit=0.3)
    row = wait_finished([task_id])[task_id]
    assert (row.status, row.error, row.attempts) == ("failed", "time limit of 0.3s exceeded", 1)
    assert "TimeLimitExceeded" in row.traceback


def test_a_time_limit_is_retried_only_where_the_task_asks(runner):
    task_id = enqueue(runner, "out_of_time_again", {"seconds": 20, "name": "x"}, time_limit=0.2)
    row = wait_finished([task_id])[task_id]
    assert (row.status, row.error, row.attempts) == ("failed", "time limit of 0.2s exceeded", 3)


def test_a_task_tells_a_cancel_from_its_time_limit(runner, session):
    timed = enqueue(runner, "tells_apart", {"seconds": 20, "name": "t"}, time_limit=0.2)
    cancelled = enqueue(runner, "tells_apart", {"seconds": 20, "name": "c"})
    wait_status(cancelled, "running")
    tasks.request_cancel(session, cancelled)
    session.commit()
    rows = wait_finished([timed, cancelled])
    assert (rows[timed].status, rows[cancelled].status) == ("failed", "cancelled")
    assert rows[cancelled].error is None
    assert STOPS[timed] == ("time limit", "TimeLimitExceeded")
    assert STOPS[cancelled] == ("cancel", "TaskCancelled")


def test_a_context_says_why_it_stops():
    timed, cancelled = TaskContext(1, 1, 1, time_limit=2.5), TaskContext(2, 1, 1)
    timed.time_out()
    cancelled.cancel()
    assert (timed.timed_out, timed.cancelled, cancelled.timed_out, cancelled.cancelled) == (
        True, False, False, True)
    for ctx, kind in ((timed, TimeLimitExceeded), (cancelled, TaskCancelled)):
        try:
            ctx.sleep(5)
        except TaskCancelled as stop:
            assert type(stop) is kind
    assert str(TimeLimitExceeded("x")) == "x" and issubclass(TimeLimitExceeded, TaskCancelled)


def test_a_worker_marks_its_next_task_running_in_the_commit_that_ends_the_last(make_runner, monkeypatch):
    from service.runner import outcomes

    own_commits = []
    started = outcomes.started
    monkeypatch.setattr(outcomes, "started", lambda *args: own_commits.append(1) or started(*args))
    ids = queue_rows(16)  # before the runner: its first claim takes all 16 (1 worker + 15 prefetched)
    make_runner(workers=1, prefetch=15)
    rows = wait_finished(ids)
    assert {row.status for row in rows.values()} == {"succeeded"}
    ordered = sorted(rows.values(), key=lambda row: row.started_at)
    assert all(later.started_at >= earlier.finished_at for earlier, later in zip(ordered, ordered[1:]))
    # The first starts in a commit of its own; each next one rides on its predecessor's
    # (two allows for a worker that outran the hand-over of the claimed batch).
    assert len(own_commits) <= 2


def test_a_next_task_whose_start_failed_in_the_last_commit_still_runs(make_runner, monkeypatch):
    from sqlalchemy.exc import OperationalError


    start_task, starts, failures = attempt_writes.start_task, [], []

    def fail_once_after_a_task_ended(session, claim, owner):
        starts.append(claim.id)
        if len(starts) == 2:  # the first start has a commit of its own; this one is in the first's end
            failures.append(claim.id)
            raise OperationalError("UPDATE tasks", {}, Exception("database is locked"))
        return start_task(session, claim, owner)

    monkeypatch.setattr(attempt_writes, "start_task", fail_once_after_a_task_ended)
    ids = queue_rows(6)
    make_runner(workers=1, prefetch=5)
    rows = wait_finished(ids, timeout=30)
    assert {row.status for row in rows.values()} == {"succeeded"}, {r.id: r.status for r in rows.values()}
    assert failures  # the start failed once, and nothing was lost to it


def test_the_migration_lets_an_existing_table_hold_reserved_tasks_and_back(empty_db):
    import pytest
    from alembic import command
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import IntegrityError, OperationalError

    from tests.test_migrations import alembic_config

    config = alembic_config(empty_db)
    command.upgrade(config, "0009")
    engine = create_engine(empty_db)
    insert = text("INSERT INTO tasks (name, args, status, progress, attempts, max_attempts, "
                  "cancel_requested, run_after, created_at, priority, queue, owner) VALUES "
                  "('noop', '{}', :status, 0, 1, 3, :no, '2026-01-01', '2026-01-01', 0, 'default', 'p')")
    try:
        with engine.begin() as connection:
            connection.execute(insert, {"status": "running", "no": False})
        command.upgrade(config, "head")
        with engine.begin() as connection:
            connection.execute(insert, {"status": "reserved", "no": False})
        with pytest.raises((IntegrityError, OperationalError)), engine.begin() as connection:
            connection.execute(insert, {"status": "nonsense", "no": False})
        command.downgrade(config, "0009")  # a reserved row goes back to the queue, its claim not counted
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, attempts, owner FROM tasks ORDER BY id")).all()
        assert [tuple(row) for row in rows] == [("running", 1, "p"), ("queued", 0, None)]
    finally:
        engine.dispose()


LOCK_WAIT_OF_2_SECONDS = {"mysql": "SET SESSION innodb_lock_wait_timeout = 2",
                          "postgresql": "SET LOCAL lock_timeout = '2s'"}


@server_only
def test_a_heartbeat_skips_a_held_row_a_finishing_transaction_has_locked(database, session):
    """The heartbeat locked every held row in id order, so a transaction holding one of them and
    wanting another deadlocked with it (seen on MariaDB). It now skips rows locked elsewhere."""
    from sqlalchemy import text

    ids = [tasks.insert_task(session, "noop", {}).id for _ in range(2)]
    session.commit()
    taken = claims.claim_unlimited(session, "w:1:a", 2)
    session.commit()
    finishing = session_factory()
    try:
        assert attempt_writes.start_task(finishing, taken[1], "w:1:a") == attempt_writes.STARTED  # holds the row of ids[1]
        with db.session_scope() as beat:
            beat.execute(text(LOCK_WAIT_OF_2_SECONDS[beat.get_bind().dialect.name]))  # fail fast, not hang
            assert attempt_writes.heartbeat(beat, "w:1:a", ids) == 1  # ids[0] refreshed, ids[1] skipped
    finally:
        finishing.rollback()
        finishing.close()
