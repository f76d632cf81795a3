"""Transactional enqueue: a task exists if and only if the caller's writes commit; no Flask needed."""
import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select

from db import session_scope, tasks, users
from db.models import Task, User
from service.runner import submit, task_rows
from tests.conftest import ROOT, count_rows, wait_for


@pytest.fixture
def told():
    """What the after-commit listener heard, and whether the rows were visible to others then."""
    heard = []

    def listener(added):
        with session_scope() as other:  # another connection: sees only committed rows
            visible = [other.get(Task, task.id) is not None for task in added]
        heard.append((added, visible))

    task_rows.on_commit(listener)
    yield heard
    task_rows.remove_listener(listener)


def test_tasks_commit_with_the_callers_writes_and_are_announced_after(session, told):
    user = users.create_user(session, name="buyer", age=30)
    first = submit.enqueue(session, "create_user", {"name": "welcome", "age": 1})
    second = submit.enqueue(session, "noop", {})
    assert told == []  # nothing is announced before the commit
    with session_scope() as other:
        assert other.get(Task, first.id) is None  # nor visible
    session.commit()
    assert count_rows(User, User.id == user.id) == 1 and count_rows(Task) == 2
    assert told == [([(first.id, "create_user", None, None, "default", False),
                      (second.id, "noop", None, None, "default", False)], [True, True])]


def test_a_rollback_takes_the_tasks_with_the_callers_writes_and_announces_nothing(session, told):
    users.create_user(session, name="buyer", age=30)
    submit.enqueue(session, "create_user", {"name": "welcome", "age": 1})
    session.rollback()
    assert count_rows(User) == 0 and count_rows(Task) == 0
    session.commit()  # a later, empty commit must not announce the forgotten task
    assert told == []


def test_a_refused_task_raises_before_anything_is_written(session, told):
    users.create_user(session, name="buyer", age=30)
    with pytest.raises(Exception) as refused:
        submit.enqueue(session, "create_user", {"name": "", "age": 1})
    assert type(refused.value).__name__ == "InvalidArguments"
    session.commit()  # the caller's own write may still commit
    assert count_rows(User) == 1 and count_rows(Task) == 0 and told == []


def test_a_runner_wakes_for_a_task_committed_in_this_process(make_runner, session):
    make_runner(poll_interval=30)  # it would not look again for half a minute by itself
    task_id = submit.enqueue(session, "noop", {}).id
    session.commit()
    wait_for(lambda: count_rows(Task, Task.id == task_id, Task.status == "succeeded"), timeout=10,
             message="the woken runner to run it")


def test_the_task_system_runs_without_flask(empty_db):
    """Import the task system and run a worker's executor in a fresh interpreter: no Flask."""
    from tests.server import migrate

    db_url = empty_db
    migrate(db_url)
    program = textwrap.dedent(f"""
        import sys, time
        import db
        import service.jobs, service.worker, service.cli
        from service.runner import RunnerConfig, submit
        from service.runner.threads import ThreadExecutor
        from db.models import Task

        db.init_engine({db_url!r})
        executor = ThreadExecutor(RunnerConfig(workers=2, poll_interval=0.05, heartbeat=0.2))
        executor.start()
        with db.session_scope() as session:
            task_id = submit.enqueue(session, "create_user", {{"name": "flaskless", "age": 3}}).id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.session_scope() as session:
                if session.get(Task, task_id).status == "succeeded":
                    break
            time.sleep(0.05)
        executor.stop(grace=5)
        with db.session_scope() as session:
            print(session.get(Task, task_id).status)
        print("flask" in sys.modules, sorted(m for m in sys.modules if m.startswith("flask")))
    """)
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    status, flask_loaded = done.stdout.strip().splitlines()[-2:]
    assert status == "succeeded"
    assert flask_loaded == "False []"


def test_a_released_savepoint_announces_nothing_until_the_outer_commit(session, told):
    first = submit.enqueue(session, "noop", {})
    savepoint = session.begin_nested()
    second = submit.enqueue(session, "noop", {})
    savepoint.commit()
    assert told == []  # RELEASE SAVEPOINT commits nothing
    session.commit()
    assert [task.id for task in told[0][0]] == [first.id, second.id] and told[0][1] == [True, True]


def test_a_savepoint_rolled_back_keeps_the_outer_transactions_tasks(session, told):
    first = submit.enqueue(session, "noop", {})
    savepoint = session.begin_nested()
    submit.enqueue(session, "noop", {})
    savepoint.rollback()
    session.commit()
    assert count_rows(Task) == 1
    announced, visible = told[0]
    assert first.id in [task.id for task in announced] and visible[0] is True


def test_one_transaction_cannot_queue_past_the_bound(session):
    submit.configure(3)
    for _ in range(3):
        submit.enqueue(session, "noop", {})
    with pytest.raises(task_rows.QueueFull):
        submit.enqueue(session, "noop", {})  # three are pending in this very transaction
    session.rollback()
    assert count_rows(Task) == 0


def test_a_full_queue_in_a_bulk_retry_leaves_the_rest_retryable(session):
    from db import bulk
    from db.models import FAILED
    from service.runner import actions
    from sqlalchemy import update

    ids = [submit.enqueue(session, "noop", {}).id for _ in range(4)]
    session.execute(update(Task).where(Task.id.in_(ids)).values(status=FAILED))
    session.commit()
    submit.configure(2)  # room for two retries: the 4 failed ones are not queued
    matched, retried = actions.retry_matching(session, status=FAILED)
    assert (matched, retried) == (4, 2)
    with session_scope() as other:
        marks = other.execute(select(Task.id, Task.retried_by).where(Task.id.in_(ids))).all()
    assert sorted(mark is None for _, mark in marks) == [False, False, True, True]
    assert all(mark != 0 for _, mark in marks)  # none left half-retried
    assert bulk.count_retryable(session, FAILED) == 2


def test_rows_inserted_together_each_get_their_own_id_and_values(session):
    later = dt.datetime(2030, 1, 2, 3, 4, 5, 678901)
    submits = [dict(name="noop", args={"n": n, "text": "é'\"%s\\"}, priority=n % 3 - 1,
                    run_after=later if n % 2 else None, limit_key=f"k{n}" if n % 4 == 0 else None,
                    concurrency=2 if n % 4 == 0 else None, time_limit=1.5 * n or None)
               for n in range(9)]
    made = tasks.insert_tasks(session, submits)
    session.commit()
    assert len({task.id for task in made}) == 9
    rows = {row.id: row for row in session.scalars(select(Task))}
    for task, given in zip(made, submits, strict=True):
        row = rows[task.id]
        assert (row.name, row.args, row.priority, row.limit_key, row.concurrency, row.time_limit) == (
            given["name"], given["args"], given["priority"], given["limit_key"], given["concurrency"],
            given["time_limit"])
        assert (row.run_after == later) == bool(given["run_after"])
        assert (row.status, row.attempts, row.cancel_requested) == ("queued", 0, False)
