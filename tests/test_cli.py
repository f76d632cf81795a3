"""The `tasks` command line on a real migrated database: in process, and as the installed script."""
import datetime as dt
import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, insert, select, text, update
from sqlalchemy.orm import Session as OrmSession

import db
from db import runners, stats
from db.models import Task, TaskLimit, TaskRollup, User, utcnow
from service.cli import main
from service.runner import chain, enqueue, signature, workflows
from tests.conftest import backend, wait_for
from tests.server import Process, migrate

TASKS_SCRIPT = os.path.join(os.path.dirname(sys.executable), "tasks")
ANN = '{"name": "ann", "age": 30}'
UNREACHABLE = "mysql+pymysql://root:secret@127.0.0.1:1/nothing"  # port 1: refused at once


@pytest.fixture
def url(empty_db):
    """The test database, migrated."""
    migrate(empty_db)
    return empty_db


@pytest.fixture
def engine(url):
    """The test's own engine, apart from the one the commands bind."""
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def tasks_cli(empty_db):
    """Run `tasks ARGS` in process on the test database (migrated only if the test asks for url)."""
    def run(*args, database_url=empty_db, **env):
        environment = {"DATABASE_URL": database_url, **{key: str(value) for key, value in env.items()}}
        return CliRunner().invoke(main, [str(arg) for arg in args], env=environment)
    yield run
    db.dispose_engine()  # the commands bind the global registry


def ok(result):
    """Assert the command succeeded; return what it printed."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(result, code=1):
    """Assert one line on stderr, nothing on stdout, exit status code and no traceback; return the line."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # else click caught a crash
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def submit(tasks_cli, *args, name="create_user", task_args=ANN):
    """Queue a task through the CLI; return its id."""
    return int(ok(tasks_cli("submit", name, "--args", task_args, *args)))


def task_rows(engine, *where):
    with OrmSession(engine) as session:
        return session.scalars(select(Task).where(*where).order_by(Task.id)).all()


def task_row(engine, task_id):
    with OrmSession(engine) as session:
        return session.get(Task, task_id)


def set_task(engine, task_id, **values):
    """Move a task as a runner would (the CLI only reads what it finds)."""
    with engine.begin() as connection:
        connection.execute(update(Task).where(Task.id == task_id).values(**values))


def fail_task(engine, task_id, **values):
    now = utcnow()
    set_task(engine, task_id, status="failed", attempts=1, started_at=now, finished_at=now,
             error="ValueError: boom", **values)


# -- submit ----------------------------------------------------------------


def test_submit_queues_the_task_the_api_would_and_prints_its_id(tasks_cli, engine):
    task_id = submit(tasks_cli, "--max-attempts", 5, "--time-limit", 60)
    [task] = task_rows(engine)
    assert task.id == task_id
    assert (task.name, task.status, task.max_attempts, task.time_limit) == ("create_user", "queued", 5, 60)
    assert task.args == {"name": "ann", "age": 30, "delay": 0.0}  # stored as the schema dumps it
    assert abs((task.run_after - task.created_at).total_seconds()) < 1


def test_submit_sets_when_the_task_may_run(tasks_cli, engine):
    later = submit(tasks_cli, "--delay", 3600)
    at = submit(tasks_cli, "--run-at", "2030-01-01T09:00:00+02:00")
    past = submit(tasks_cli, "--run-at", "2001-01-01T00:00:00Z")
    row = task_row(engine, later)
    assert (row.run_after - row.created_at).total_seconds() == pytest.approx(3600, abs=1)
    assert task_row(engine, at).run_after == dt.datetime(2030, 1, 1, 7, 0)
    row = task_row(engine, past)
    assert abs((row.run_after - row.created_at).total_seconds()) < 1  # a past time runs now


def test_submit_refuses_an_unknown_task_naming_the_known_ones(tasks_cli, engine):
    line = refused(tasks_cli("submit", "nope", "--args", "{}"), code=2)
    assert "unknown task 'nope'" in line and "create_user" in line
    assert task_rows(engine) == []


@pytest.mark.parametrize("args_json, why", [
    ("{bad", "not valid JSON"),
    ('{"name": "ann", "age": NaN}', "NaN is not JSON"),
    ("[1, 2]", "must be a JSON object"),
])
def test_submit_refuses_args_that_are_not_a_json_object(tasks_cli, engine, args_json, why):
    line = refused(tasks_cli("submit", "create_user", "--args", args_json), code=2)
    assert "--args" in line and why in line
    assert task_rows(engine) == []


@pytest.mark.parametrize("args_json, why", [
    ('{"name": "ann"}', "age: Missing data for required field."),
    ('{"name": "ann", "age": 201}', "age: Must be greater than or equal to 0"),
    ('{"name": "ann", "age": 3, "colour": "red"}', "colour: Unknown field."),
])
def test_submit_refuses_args_that_fail_the_schema_naming_the_field(tasks_cli, engine, args_json, why):
    line = refused(tasks_cli("submit", "create_user", "--args", args_json), code=2)
    assert "invalid --args for create_user" in line and why in line
    assert task_rows(engine) == []


@pytest.mark.parametrize("options, why", [
    (["--delay", "-1"], "--delay: Must be greater than or equal to 0"),
    (["--delay", "soon"], "'--delay': 'soon' is not a valid float"),
    (["--max-attempts", "0"], "--max-attempts: Must be greater than or equal to 1"),
    (["--time-limit", "0"], "--time-limit: Must be greater than or equal to 0.1"),
    (["--run-at", "tomorrow"], "--run-at: Not a valid datetime."),
    (["--delay", "5", "--run-at", "2030-01-01"], "give --delay or --run-at, not both"),
])
def test_submit_refuses_options_the_api_refuses(tasks_cli, engine, options, why):
    line = refused(tasks_cli("submit", "create_user", "--args", ANN, *options), code=2)
    assert why in line
    assert task_rows(engine) == []


def test_submit_refuses_when_the_queue_is_full(tasks_cli, engine):
    submit(tasks_cli)
    line = refused(tasks_cli("submit", "create_user", "--args", ANN, TASK_MAX_QUEUED=1))
    assert "queue is full" in line
    assert len(task_rows(engine)) == 1


# -- list and show ---------------------------------------------------------


def test_list_shows_tasks_newest_first_with_the_total(tasks_cli, engine):
    first, second, third = (submit(tasks_cli) for _ in range(3))
    set_task(engine, second, status="cancelled", finished_at=utcnow())
    out = ok(tasks_cli("list"))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert [int(line.split()[0]) for line in lines[1:4]] == [third, second, first]
    assert lines[2].split()[1:3] == ["create_user", "cancelled"]
    assert lines[-1] == "3 tasks, page 1 of 1"
    only = ok(tasks_cli("list", "--status", "cancelled")).splitlines()
    assert [line.split()[0] for line in only[1:-1]] == [str(second)] and only[-1].startswith("1 tasks")
    assert ok(tasks_cli("list", "--name", "nothing_by_that_name")) == "0 tasks\n"
    paged = ok(tasks_cli("list", "--page", 2, "--page-size", 2)).splitlines()
    assert [line.split()[0] for line in paged[1:-1]] == [str(first)]
    assert paged[-1] == "3 tasks, page 2 of 2"
    listed = json.loads(ok(tasks_cli("list", "--json", "--status", "queued")))
    assert [task["id"] for task in listed["tasks"]] == [third, first] and listed["total"] == 2
    assert "'--status'" in refused(tasks_cli("list", "--status", "lost"), code=2)


def test_show_prints_every_field_and_the_timings_of_a_finished_task(tasks_cli, engine):
    old = submit(tasks_cli)
    new = submit(tasks_cli)
    due = utcnow().replace(microsecond=0) - dt.timedelta(hours=1)
    set_task(engine, old, status="failed", attempts=2, run_after=due, owner="host:1:abc",
             started_at=due + dt.timedelta(seconds=5), finished_at=due + dt.timedelta(seconds=7),
             heartbeat_at=due + dt.timedelta(seconds=6), progress=40, message="half way",
             error="ValueError: boom", traceback="Traceback (most recent call last):\nValueError: boom",
             retried_by=new, time_limit=60)
    set_task(engine, new, retry_of=old)
    out = ok(tasks_cli("show", old))
    fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["name"] == "create_user" and fields["status"] == "failed"
    assert fields["attempts"] == "2 of 3" and fields["progress"] == "40%" and fields["message"] == "half way"
    assert json.loads(fields["args"]) == {"name": "ann", "age": 30, "delay": 0.0}
    assert fields["error"] == "ValueError: boom" and fields["owner"] == "host:1:abc"
    assert fields["time limit"] == "1m" and fields["cancel requested"] == "no"
    assert fields["run after"] == due.strftime("%Y-%m-%d %H:%M:%S.000 UTC")
    assert fields["waited in queue"] == "5.00s" and fields["ran for"] == "2.00s"
    assert fields["retry of"] == "-" and fields["retried by"] == str(new)
    assert out.rstrip().endswith("traceback:\n  Traceback (most recent call last):\n  ValueError: boom")
    assert "retry of:         %d" % old in ok(tasks_cli("show", new))
    dropped = submit(tasks_cli)  # cancelled before it ever started: it waited until then, never ran
    set_task(engine, dropped, status="cancelled", run_after=due, finished_at=due + dt.timedelta(seconds=3))
    out = ok(tasks_cli("show", dropped))
    assert "waited in queue:  3.00s\nran for:          -\n" in out
    shown = json.loads(ok(tasks_cli("show", old, "--json")))
    assert (shown["id"], shown["retried_by"]) == (old, new)
    assert (shown["waited_seconds"], shown["ran_seconds"]) == (5.0, 2.0)


def test_show_times_a_waiting_and_a_running_task_up_to_now(tasks_cli, engine):
    waiting = submit(tasks_cli)
    later = submit(tasks_cli, "--delay", 3600)
    running = submit(tasks_cli)
    now = utcnow()
    set_task(engine, waiting, run_after=now - dt.timedelta(seconds=90))
    set_task(engine, running, status="running", attempts=1, run_after=now - dt.timedelta(seconds=100),
             started_at=now - dt.timedelta(seconds=40))
    assert "waited in queue:  1m 3" in ok(tasks_cli("show", waiting))  # 1m 30s and counting
    assert "waited in queue:  not due yet (due in 59m" in ok(tasks_cli("show", later))
    out = ok(tasks_cli("show", running))
    assert "waited in queue:  1m\n" in out and "ran for:          4" in out and "s so far" in out


@pytest.mark.parametrize("task_id", ["999", "0", "99999999999999999999"])
def test_show_refuses_a_task_that_does_not_exist(tasks_cli, url, task_id):
    assert refused(tasks_cli("show", task_id)) == f"Error: task {task_id} not found"


# -- cancel ----------------------------------------------------------------


def test_cancel_says_what_it_did_and_fails_when_too_late_or_unknown(tasks_cli, engine):
    queued, running = submit(tasks_cli), submit(tasks_cli)
    set_task(engine, running, status="running", attempts=1, started_at=utcnow(), owner="elsewhere")
    assert ok(tasks_cli("cancel", queued)) == f"task {queued} cancelled\n"
    assert task_row(engine, queued).status == "cancelled"
    assert ok(tasks_cli("cancel", running)) == f"task {running} is running; asked it to stop\n"
    row = task_row(engine, running)
    assert (row.status, row.cancel_requested) == ("running", True)
    assert "already finished (cancelled)" in refused(tasks_cli("cancel", queued))
    assert refused(tasks_cli("cancel", 999)) == "Error: task 999 not found"


# -- retry -----------------------------------------------------------------


def test_retry_queues_a_new_task_linked_to_the_failed_one(tasks_cli, engine):
    old = submit(tasks_cli, "--max-attempts", 4, "--time-limit", 30)
    fail_task(engine, old)
    new = int(ok(tasks_cli("retry", old)))
    old_row, new_row = task_row(engine, old), task_row(engine, new)
    assert (old_row.status, old_row.retried_by, old_row.error) == ("failed", new, "ValueError: boom")
    assert (new_row.status, new_row.retry_of, new_row.name, new_row.args) == (
        "queued", old, "create_user", old_row.args)
    assert (new_row.max_attempts, new_row.time_limit) == (4, 30)


def test_retry_refuses_what_cannot_be_retried(tasks_cli, engine):
    queued, failed = submit(tasks_cli), submit(tasks_cli)
    fail_task(engine, failed)
    assert "only failed or cancelled tasks can be retried" in refused(tasks_cli("retry", queued))
    ok(tasks_cli("retry", failed))
    assert "retried already" in refused(tasks_cli("retry", failed))
    assert refused(tasks_cli("retry", 999)) == "Error: task 999 not found"
    stale = submit(tasks_cli)  # its arguments no longer pass the task's schema
    fail_task(engine, stale, args={"name": "ann"})
    assert "age" in refused(tasks_cli("retry", stale))
    assert task_row(engine, stale).retried_by is None
    assert len(task_rows(engine)) == 4  # only the one good retry was queued


def test_retry_matching_retries_every_failed_or_cancelled_task_of_a_filter(tasks_cli, engine):
    failed = [submit(tasks_cli) for _ in range(3)]
    other = submit(tasks_cli, name="noop", task_args="{}")
    cancelled = submit(tasks_cli)
    for task_id in [*failed, other]:
        fail_task(engine, task_id)
    set_task(engine, cancelled, status="cancelled", finished_at=utcnow())
    assert ok(tasks_cli("retry", "--failed", "--dry-run")) == "matched 4, retried 0 (dry run)\n"
    assert len(task_rows(engine)) == 5
    assert ok(tasks_cli("retry", "--failed", "--name", "create_user", "--limit", 2)) == "matched 3, retried 2\n"
    assert [row.retry_of for row in task_rows(engine, Task.retry_of.is_not(None))] == failed[:2]
    assert ok(tasks_cli("retry", "--failed", "--cancelled")) == "matched 3, retried 3\n"
    assert {row.retry_of for row in task_rows(engine, Task.retry_of.is_not(None))} == {*failed, other, cancelled}
    assert ok(tasks_cli("retry", "--cancelled")) == "matched 0, retried 0\n"


@pytest.mark.parametrize("args", [[], ["1", "--failed"], ["1", "--name", "create_user"]])
def test_retry_needs_an_id_or_a_filter_but_not_both(tasks_cli, args):
    assert "(see 'tasks retry --help')" in refused(tasks_cli("retry", *args), code=2)


# -- prune -----------------------------------------------------------------


def test_prune_rolls_up_then_deletes_old_finished_tasks_in_batches(tasks_cli, engine):
    now = utcnow()
    # Counted up to 30 days ago: the tasks below finished since and are not rolled up yet.
    with engine.begin() as connection:
        connection.execute(update(TaskRollup).values(
            rolled_until=stats.floor_minute(now - dt.timedelta(days=30))))
        row = dict(name="create_user", args={}, progress=100, attempts=1, max_attempts=3,
                   cancel_requested=False, run_after=now, created_at=now)
        old = now - dt.timedelta(days=10)
        connection.execute(insert(Task), [dict(row, status="succeeded" if n % 2 else "failed",
                                               finished_at=old + dt.timedelta(seconds=n))
                                          for n in range(1100)])
        connection.execute(insert(Task), [dict(row, status="succeeded", finished_at=now - dt.timedelta(days=1))
                                          for _ in range(3)])
    queued = submit(tasks_cli)
    assert ok(tasks_cli("prune", "--older-than", "7d")) == "deleted 1100 tasks finished more than 7d ago\n"
    assert [row.status for row in task_rows(engine)] == ["succeeded"] * 3 + ["queued"]
    assert task_row(engine, queued) is not None
    with OrmSession(engine) as session:  # the counts stayed exact
        assert [stats.count_tasks(session, status) for status in ("succeeded", "failed", "queued")] == [3, 0, 1]
    assert ok(tasks_cli("prune")) == "deleted 0 tasks finished more than 7d ago\n"
    assert ok(tasks_cli("prune", "--older-than", "1h")) == "deleted 3 tasks finished more than 1h ago\n"
    ok(tasks_cli("cancel", queued))  # finished just now: not counted yet, so it stays
    out = ok(tasks_cli("prune", "--older-than", "0"))
    assert out == ("deleted 0 tasks finished more than 0.00s ago;"
                   " tasks finished in the last 2m stay until they are counted\n")
    assert task_row(engine, queued).status == "cancelled"


def test_prune_deletes_concurrency_limit_keys_idle_as_long(tasks_cli, engine):
    old = utcnow() - dt.timedelta(days=10)
    with engine.begin() as connection:
        connection.execute(insert(TaskLimit), [{"limit_key": f"user:{n}", "created_at": old}
                                               for n in range(1201)])
    assert ok(tasks_cli("prune", "--older-than", "7d")) == (
        "deleted 0 tasks finished more than 7d ago, and 1201 concurrency-limit keys as old with no queued"
        " or running task\n")
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(TaskLimit)) == 0


@pytest.mark.parametrize("duration", ["soon", "-1d", "7y", "99999999d"])
def test_prune_refuses_a_bad_duration(tasks_cli, engine, duration):
    submit(tasks_cli)
    assert "'--older-than'" in refused(tasks_cli("prune", "--older-than", duration), code=2)
    assert len(task_rows(engine)) == 1


# -- stats -----------------------------------------------------------------


def test_stats_counts_statuses_names_the_queue_the_last_hour_and_runners(tasks_cli, engine):
    cancelled, due = submit(tasks_cli), submit(tasks_cli)
    submit(tasks_cli, "--delay", 3600)
    submit(tasks_cli, name="noop", task_args="{}")
    ok(tasks_cli("cancel", cancelled))
    now = utcnow()
    with OrmSession(engine) as session:
        runners.record_runner(session, "alive:1:aaaa", "alive", 1, 4, 1, now=now)
        runners.record_runner(session, "gone:2:bbbb", "gone", 2, 4, 0, now=now - dt.timedelta(minutes=10))
        session.commit()
    set_task(engine, due, run_after=now - dt.timedelta(seconds=75))
    lines = ok(tasks_cli("stats")).splitlines()
    assert lines[0] == "tasks: 3 queued, 0 reserved, 0 running, 0 succeeded, 0 failed, 1 cancelled"
    assert lines[1].startswith("queue: 3 queued, 2 due, the oldest due for 1m 1")
    assert lines[2] == "finished in the last hour: 1 (0 succeeded, 0 failed, 1 cancelled)"
    names = {line.split()[0]: line.split()[1:] for line in lines if line.startswith(("create_user", "noop"))}
    assert names == {"create_user": ["2", "0", "0", "0", "0", "1"], "noop": ["1", "0", "0", "0", "0", "0"]}
    assert "runners: 2 (1 lost; lost means no heartbeat for 30s)" in lines
    states = {line.split()[0]: line.split()[-1] for line in lines if line.startswith(("alive:", "gone:"))}
    assert states == {"alive:1:aaaa": "alive", "gone:2:bbbb": "LOST"}
    overview = json.loads(ok(tasks_cli("stats", "--json", TASK_LEASE=1200)))
    assert overview["statuses"]["queued"] == 3 and overview["queue"]["due"] == 2
    assert {r["owner"]: r["lost"] for r in overview["runners"]} == {"alive:1:aaaa": False, "gone:2:bbbb": False}


# -- errors every command shares --------------------------------------------

# `worker` is checked as a real process below: in process, a missed refusal would run forever.
EVERY_COMMAND = [["submit", "create_user", "--args", ANN], ["list"], ["show", "1"], ["cancel", "1"],
                 ["retry", "1"], ["retry", "--failed"], ["prune"], ["stats"]]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_every_command_says_in_one_line_that_the_database_cannot_be_reached(tasks_cli, tmp_path, command):
    line = refused(tasks_cli(*command, database_url=UNREACHABLE))
    assert "cannot reach the database mysql+pymysql://root:***@127.0.0.1:1/nothing" in line
    assert "Connection refused" in line and "secret" not in line
    # A SQLite path that is a directory cannot be opened either.
    assert "cannot reach the database" in refused(tasks_cli(*command, database_url=f"sqlite:///{tmp_path}"))


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_every_command_refuses_a_database_that_was_never_migrated(tasks_cli, command):
    line = refused(tasks_cli(*command))
    assert "was never migrated: run the migrations (make migrate, or alembic upgrade head)" in line


def test_a_partly_migrated_database_is_refused_naming_the_missing_tables(tasks_cli, engine):
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE runners"))
    assert "lacks the tables runners: run the migrations" in refused(tasks_cli("stats"))


def test_a_missing_sqlite_file_is_refused_and_not_created(tasks_cli, tmp_path, db_url):
    if backend(db_url) != "sqlite":
        pytest.skip("about SQLite files")
    missing = tmp_path / "typo.db"
    line = refused(tasks_cli("list", database_url=f"sqlite:///{missing}"))
    assert line == (f"Error: no SQLite database at {missing}:"
                    " run the migrations (make migrate, or alembic upgrade head)")
    assert not missing.exists()


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_every_command_refuses_a_bad_setting_in_one_line(tasks_cli, engine, command):
    line = refused(tasks_cli(*command, TASK_MAX_QUEUED="lots"))
    assert line == "Error: TASK_MAX_QUEUED must be a int, got 'lots'"
    assert task_rows(engine) == []


def test_a_database_url_that_cannot_be_used_is_one_line(tasks_cli):
    assert "DATABASE_URL cannot be used" in refused(tasks_cli("list", database_url="sqlite:///:memory:"))
    assert "DATABASE_URL cannot be used" in refused(tasks_cli("list", database_url="not a url"))


# -- real processes ----------------------------------------------------------


def run_script(*args, timeout=60, **env):
    """Run the installed `tasks` script; return the finished process."""
    return subprocess.run([TASKS_SCRIPT, *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def one_line(finished):
    """Assert exit status 1 and a single error line without a traceback; return it."""
    assert finished.returncode == 1 and finished.stdout == "", finished
    assert len(finished.stderr.splitlines()) == 1 and "Traceback" not in finished.stderr, finished.stderr
    return finished.stderr


@pytest.mark.slow
def test_the_worker_command_refuses_to_start_in_one_line(empty_db):
    assert "never migrated" in one_line(run_script("worker", DATABASE_URL=empty_db))
    assert "cannot reach the database" in one_line(run_script("worker", DATABASE_URL=UNREACHABLE))
    bad = one_line(run_script("worker", DATABASE_URL=empty_db, TASK_WORKERS="many"))
    assert "TASK_WORKERS must be a int, got 'many'" in bad


@pytest.mark.slow
def test_the_installed_script_submits_shows_and_fails_in_one_line(url):
    def tasks(*args):
        return run_script(*args, DATABASE_URL=url)

    submitted = tasks("submit", "create_user", "--args", ANN)
    assert (submitted.returncode, submitted.stderr) == (0, "")
    task_id = int(submitted.stdout)
    shown = tasks("show", str(task_id))
    assert shown.returncode == 0
    assert f"id:               {task_id}\nname:             create_user\nstatus:           queued\n" in shown.stdout
    failed = tasks("submit", "create_user", "--args", '{"name": "ann"}')
    assert failed.returncode == 2 and failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1 and "Traceback" not in failed.stderr
    assert "age: Missing data for required field." in failed.stderr


@pytest.mark.slow
def test_the_worker_command_runs_submitted_tasks_and_stops_cleanly_on_sigterm(tasks_cli, url, engine, tmp_path):
    worker = Process([TASKS_SCRIPT, "worker"], url, tmp_path / "worker.log",
                     TASK_WORKERS=2, TASK_POLL_INTERVAL=0.1, TASK_HEARTBEAT=0.2)
    worker.start()
    try:
        task_id = submit(tasks_cli, task_args='{"name": "from the cli", "age": 7}')
        wait_for(lambda: task_row(engine, task_id).status == "succeeded", timeout=60,
                 message=f"task {task_id} to succeed (worker log: {worker.log_path})")
        with OrmSession(engine) as session:
            user = session.get(User, task_row(engine, task_id).result)
            assert (user.name, user.age) == ("from the cli", 7)
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()
    finally:
        worker.stop()


def test_queues_are_listed_paused_and_resumed_from_the_command_line(tasks_cli, url, engine):
    submit(tasks_cli, "--priority", "9", name="mail", task_args="{}")
    assert "priority:         9" in ok(tasks_cli("show", 1)) and "queue:            mail" in ok(tasks_cli("show", 1))
    assert "queue mail paused" in ok(tasks_cli("pause", "mail"))
    listing = ok(tasks_cli("queues"))
    assert [line.split()[:4] for line in listing.splitlines()[1:]] == [
        ["default", "active", "0", "0"], ["mail", "PAUSED", "1", "0"]]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name, paused FROM task_queues")).all() == [("mail", True)]
    assert "queue mail resumed" in ok(tasks_cli("resume", "mail"))
    assert json.loads(ok(tasks_cli("queues", "--json")))[1]["paused"] is False


def test_a_typo_makes_no_queue_and_a_stray_record_can_be_removed_from_the_command_line(tasks_cli, url, engine):
    assert "no queue named 'typoqueue'; queues: default, mail" in refused(tasks_cli("pause", "typoqueue"))
    with engine.begin() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM task_queues")).scalar() == 0
        connection.execute(text("INSERT INTO task_queues (name, paused, changed_at) "
                                "VALUES ('old', :paused, '2026-01-01 00:00:00')"), {"paused": True})
    assert "declared by a task or configured" in refused(tasks_cli("remove-queue", "mail"))
    assert "queue old removed" in ok(tasks_cli("remove-queue", "old"))
    assert "no record of a queue named 'old'" in refused(tasks_cli("remove-queue", "old"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM task_queues")).scalar() == 0


def test_a_bad_queue_name_or_priority_is_refused_before_the_database(tasks_cli, url, engine):
    assert "queue name" in refused(tasks_cli("pause", "no spaces"), code=2)
    assert "--priority" in refused(tasks_cli("submit", "noop", "--priority", "101"), code=2)
    assert task_rows(engine) == []


def test_schedules_are_listed_with_their_last_and_next_run(tasks_cli, url, monkeypatch):
    from service.runner import scheduler as scheduler_module
    from tests.test_schedules import recurring

    assert "no recurring tasks" in ok(tasks_cli("schedules"))
    tasks = recurring(every=3600, args={"kind": "hourly"})
    monkeypatch.setattr(scheduler_module, "registry", tasks)
    listing = ok(tasks_cli("schedules", SCHEDULE_TZ="Europe/Berlin"))
    assert listing.splitlines()[0].split()[:3] == ["TASK", "SCHEDULE", "TZ"]
    assert "report" in listing and "every 3600 s" in listing and "Europe/Berlin" in listing
    assert '{"kind":"hourly"}' in listing
    [row] = json.loads(ok(tasks_cli("schedules", "--json")))
    assert row["last_task_id"] is None and row["next_run_at"].endswith("+00:00")
    assert "SCHEDULE_TZ" in refused(tasks_cli("schedules", SCHEDULE_TZ="Nowhere/Land"))


# -- workflows -------------------------------------------------------------


def failed_workflow(engine):
    """A chain of two steps whose first failed, settled as a runner settles it; (workflow id, first task id)."""
    with OrmSession(engine) as session:
        workflow_id, [first] = enqueue(session, chain(signature("step", {"value": 7}), signature("step", {"value": 8})))
        session.commit()
    fail_task(engine, first)
    with OrmSession(engine) as session:
        workflows.task_ended(session, task_row(engine, first).workflow_node, first)
        session.commit()
    return workflow_id, first


def test_workflow_commands_list_show_retry_and_cancel(tasks_cli, url, engine):
    workflow_id, first = failed_workflow(engine)
    listed = ok(tasks_cli("workflow", "list", "--status", "failed"))
    assert f"{workflow_id}   failed  0 of 2 succeeded, 1 failed, 1 waiting" in listed
    assert ok(tasks_cli("workflow", "list", "--status", "running")).strip() == "0 workflows"
    shown = ok(tasks_cli("workflow", "show", workflow_id))
    assert f"workflow {workflow_id}: failed" in shown and f"error:    task {first}: ValueError: boom" in shown
    assert "chain  [failed]" in shown and "step  [waiting]  not started" in shown
    assert json.loads(ok(tasks_cli("workflow", "show", workflow_id, "--json")))["tasks"] == [first]
    assert f"workflow:         {workflow_id}" in ok(tasks_cli("show", first))
    assert f"step of workflow {workflow_id}; retry the workflow" in refused(tasks_cli("retry", first))
    assert "already ended (failed)" in refused(tasks_cli("workflow", "cancel", workflow_id))

    rerun = int(ok(tasks_cli("workflow", "retry", workflow_id)))
    assert (task_row(engine, rerun).retry_of, task_row(engine, first).retried_by) == (first, rerun)
    assert "is running; only a failed or cancelled one" in refused(tasks_cli("workflow", "retry", workflow_id))
    assert ok(tasks_cli("workflow", "cancel", workflow_id)) == f"workflow {workflow_id} cancelled\n"
    assert task_row(engine, rerun).status == "cancelled"  # its queued task, right after the commit
    assert refused(tasks_cli("workflow", "show", 999)) == "Error: workflow 999 not found"
    assert refused(tasks_cli("workflow", "retry", 999)) == "Error: workflow 999 not found"
