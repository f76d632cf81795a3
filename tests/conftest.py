"""Fixtures: a real database (SQLite file or TEST_DATABASE_URL), the app, the runner."""
import os
import pathlib
import threading
import time

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

import db
from db.models import Base
from service import create_app
from service.runner import RunnerConfig, submit
from service.runner.threads import ThreadExecutor

import service.jobs  # noqa: F401  registers the real tasks
import tests.sample_tasks  # noqa: F401  registers the tasks the tests run

ROOT = pathlib.Path(__file__).resolve().parent.parent
MYSQL_URL = os.environ.get("TEST_DATABASE_URL")
mysql_only = pytest.mark.skipif(not MYSQL_URL, reason="needs TEST_DATABASE_URL (MySQL/MariaDB)")

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
    return MYSQL_URL or f"sqlite:///{tmp_path / 'test.db'}"


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
    from sqlalchemy import func, select

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
