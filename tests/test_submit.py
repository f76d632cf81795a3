"""Transactional enqueue: a task exists if and only if the caller's writes commit; no Flask needed."""
import subprocess
import sys
import textwrap

import pytest

from db import session_scope, users
from db.models import Task, User
from service.runner import submit
from tests.conftest import ROOT, count_rows, wait_for


@pytest.fixture
def told():
    """What the after-commit listener heard, and whether the rows were visible to others then."""
    heard = []

    def listener(added):
        with session_scope() as other:  # another connection: sees only committed rows
            visible = [other.get(Task, task.id) is not None for task in added]
        heard.append((added, visible))

    submit.on_commit(listener)
    yield heard
    submit.remove_listener(listener)


def test_tasks_commit_with_the_callers_writes_and_are_announced_after(session, told):
    user = users.create_user(session, name="buyer", age=30)
    first = submit.enqueue(session, "create_user", {"name": "welcome", "age": 1})
    second = submit.enqueue(session, "noop", {})
    assert told == []  # nothing is announced before the commit
    with session_scope() as other:
        assert other.get(Task, first.id) is None  # nor visible
    session.commit()
    assert count_rows(User, User.id == user.id) == 1 and count_rows(Task) == 2
    assert told == [([(first.id, "create_user", None, None), (second.id, "noop", None, None)],
                     [True, True])]


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
