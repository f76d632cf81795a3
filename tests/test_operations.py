"""What the people who run it see of real processes: runner records, lost ones."""
import signal

import pytest

import db
from db import runners
from tests.conftest import wait_for
from tests.server import Worker, migrate

pytestmark = pytest.mark.slow


@pytest.fixture
def migrated(empty_db):
    """A migrated database with the session registry bound to it."""
    migrate(empty_db)
    db.init_engine(empty_db)
    yield empty_db
    db.dispose_engine()


def runner_rows(lease=1.0):
    with db.session_scope() as session:
        return runners.list_runners(session, lease)


def test_a_worker_killed_with_sigkill_shows_as_lost_and_a_stopped_one_leaves(migrated, tmp_path):
    url = migrated
    settings = dict(TASK_WORKERS=2, TASK_HEARTBEAT=0.2, TASK_LEASE=1, TASK_POLL_INTERVAL=0.1)
    doomed = Worker(url, tmp_path / "doomed.log", **settings).start()
    clean = Worker(url, tmp_path / "clean.log", **settings).start()
    try:
        rows = wait_for(lambda: len(runner_rows()) == 2 and runner_rows(), message="two runner records")
        assert {row["pid"] for row in rows} == {doomed.proc.pid, clean.proc.pid}
        assert all(row["workers"] == 2 and not row["lost"] for row in rows)
        doomed.signal(signal.SIGKILL)
        doomed.wait(10)
        lost = wait_for(lambda: [r for r in runner_rows() if r["lost"]], message="the killed one lost")
        assert [row["pid"] for row in lost] == [doomed.proc.pid]
        clean.stop(timeout=30)
        assert [row["pid"] for row in runner_rows()] == [doomed.proc.pid]
    finally:
        clean.stop(timeout=30)
