"""Fixtures: a real database (SQLite file or TEST_DATABASE_URL), the app, the runner."""
import collections
import os
import pathlib
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

import db
from db import tasks
from db.models import Base, Task, User
from service import create_app
from service.runner import RunnerConfig, submit
from service.runner.threads import ThreadExecutor

import service.jobs  # noqa: F401  registers the real tasks
import tests.sample_tasks  # noqa: F401  registers the tasks the tests run

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A database server (MariaDB or PostgreSQL) to run the suite on instead of a SQLite file.
SERVER_URL = os.environ.get("TEST_DATABASE_URL")
BACKEND = make_url(SERVER_URL).get_backend_name() if SERVER_URL else "sqlite"
server_only = pytest.mark.skipif(not SERVER_URL, reason="needs TEST_DATABASE_URL (a database server)")
sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's own behaviour")
mysql_only = pytest.mark.skipif(BACKEND != "mysql", reason="needs TEST_DATABASE_URL on MySQL/MariaDB")
postgres_only = pytest.mark.skipif(BACKEND != "postgresql", reason="needs TEST_DATABASE_URL on PostgreSQL")

FAST_RUNNER = dict(poll_interval=0.05, heartbeat=0.2, lease=30.0, retry_base=0.05, retry_cap=0.2)


def wait_for(predicate, timeout=30.0, interval=0.02, message="condition"):
    """Poll predicate until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def db_url(tmp_path):
    """The test database: TEST_DATABASE_URL if set, else a SQLite file in tmp_path."""
    return SERVER_URL or f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def empty_db(db_url):
    """Drop every table so a test starts from an empty database."""
    engine = create_engine(db_url)
    with engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()
    return db_url


@pytest.fixture
def database(empty_db):
    """Fresh tables and the session registry bound to them."""
    engine = db.init_engine(empty_db, pool_size=20, max_overflow=10)
    Base.metadata.create_all(engine)
    yield engine
    db.dispose_engine()


@pytest.fixture
def shared_db(empty_db):
    """A migrated database that worker processes and this process's registry both use."""
    from tests.server import migrate

    migrate(empty_db)
    db.init_engine(empty_db)
    yield empty_db
    db.dispose_engine()


@pytest.fixture
def session(database):
    """The registry's Session for this (test) thread."""
    yield db.Session
    db.Session.remove()


@pytest.fixture
def make_runner(database):
    """Build started runners; stops them all at the end of the test."""
    runners = []

    def make(**options):
        runner = ThreadExecutor(RunnerConfig(**{"workers": 4, **FAST_RUNNER, **options}))
        runner.start()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop(grace=5)


@pytest.fixture
def runner(make_runner):
    return make_runner()


@pytest.fixture
def app_config(empty_db):
    return {
        "DATABASE_URL": empty_db,
        "TESTING": True,
        "TASK_WORKERS": 4,
        "TASK_POLL_INTERVAL": 0.05,
        "TASK_HEARTBEAT": 0.2,
        "TASK_RETRY_BASE": 0.05,
        "TASK_RETRY_CAP": 0.2,
        "SEED_SYNC_DELAY": 0.0,
        "SEED_TASK_DELAY": 0.0,
    }


@pytest.fixture
def make_app(app_config):
    """Build apps on the fresh database (overriding settings); stop their runners after."""
    apps = []

    def make(**overrides):
        app = create_app({**app_config, **overrides})
        Base.metadata.create_all(db.get_engine())
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["executor"].stop(grace=5)
    db.dispose_engine()


@pytest.fixture
def app(make_app):
    """The app on a fresh database."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def count_rows(model, *where):
    """Count rows of model in a fresh session."""
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def backend(url):
    return make_url(url).get_backend_name()


def live_threads(prefix):
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture(autouse=True)
def fresh_backlog():
    """Each test starts with the default bound on this process's submissions."""
    submit.configure(10_000)


@pytest.fixture(autouse=True)
def no_runner_left_behind():
    """Fail a test that leaves runner threads alive: they would claim the next test's tasks."""
    yield
    wait_for(lambda: not live_threads("task-"), timeout=10, message="runner threads to exit")


# Helpers and fixtures several test modules share.

def task_row(task_id):
    """The task's row, read afresh."""
    with db.session_scope() as s:
        return s.get(Task, task_id)


def wait_finished(task_ids, timeout=60):
    """Wait until every task has finished; return their rows by id."""
    def done():
        with db.session_scope() as s:
            rows = s.scalars(select(Task).where(Task.id.in_(task_ids))).all()
        if len(rows) == len(task_ids) and all(r.finished for r in rows):
            return {r.id: r for r in rows}
        return None

    return wait_for(done, timeout=timeout, message=f"{len(task_ids)} tasks to finish")


def samples(text, name):
    """{labels text: value} of one metric in a scrape."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name):]] = float(value)
    return found


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return response.get_data(as_text=True)


def grown(before, after, name):
    """How each sample of a counter grew between two scrapes (counters are per process)."""
    old = samples(before, name)
    return {key: value - old.get(key, 0.0) for key, value in samples(after, name).items()
            if value - old.get(key, 0.0)}


def most_in_any_window(starts, window):
    """The most starts in any window [a, a + window) (starts sorted)."""
    most, first = 0, 0
    for last, start in enumerate(starts):
        while start - starts[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def wait_status(task_id, status, timeout=30):
    """Wait until the task has status; return its row."""
    return wait_for(lambda: task_row(task_id).status == status and task_row(task_id),
                    timeout=timeout, message=f"task {task_id} to be {status}")


def enqueue(runner, name, args=None, **options):
    """Submit and commit a task on this thread's Session (the runner wakes after the commit)."""
    task_id = submit.enqueue(db.Session, name, args or {}, **options).id
    db.Session.commit()
    db.Session.remove()
    return task_id


def statuses_counted(ids):
    """{status: how many of ids}, read in one statement (two reads could straddle a change)."""
    with db.session_scope() as s:
        return dict(collections.Counter(s.scalars(select(Task.status).where(Task.id.in_(ids)))))


def queue_rows(n, name="noop", args=None):
    """Insert n due tasks straight into the table (no wake-up)."""
    with db.session_scope() as s:
        return [tasks.insert_task(s, name, args or {}).id for _ in range(n)]


# Settings that make a server or worker process notice a lost lease in seconds.
FAST = dict(TASK_HEARTBEAT=0.5, TASK_LEASE=2, TASK_POLL_INTERVAL=0.1, LOG_LEVEL="WARNING")


@pytest.fixture
def processes():
    """Server and worker processes a test starts (append them); stopped after it."""
    started = []
    yield started
    for process in started:
        process.stop(timeout=30)


def counts(engine):
    """{status: n} of tasks, and (users, distinct user names)."""
    with engine.connect() as connection:
        by_status = dict(connection.execute(
            select(Task.status, func.count()).group_by(Task.status)).all())
        users = connection.execute(
            select(func.count(), func.count(User.name.distinct()))).one()
    return by_status, tuple(users)


def all_succeeded(engine, n):
    """counts() once all n tasks succeeded, else False."""
    by_status, users = counts(engine)
    return by_status.get("succeeded") == n and (by_status, users)
