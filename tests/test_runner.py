"""The runner with real threads on a real database."""
import datetime as dt
import gc
import sqlite3
import threading

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import session as orm_session

import db
from db import claims, attempt_writes, tasks
from db.models import Task, User, utcnow
from db.session import session_factory
from service.runner import QueueFull, RunnerConfig, submit
from service.runner.dispatch import Dispatcher
from service.runner.jobs import Jobs
from service.runner.outcomes import backoff_seconds
from service.runner.process import RunnerProcess
from tests.conftest import (BACKEND, FAST_RUNNER, count_rows, enqueue, mysql_only, queue_rows, sqlite_only, statuses_counted,
                            task_row, wait_finished, wait_for, wait_status)
from tests.server_sql import kill_connection_sql, server_connection_id
from tests.sample_tasks import PROBE_WRITES


def users_named(name):
    return count_rows(User, User.name == name)


@pytest.fixture
def session_threads():
    """Tag every session's transaction with the thread that began it."""
    def tag(session, transaction):
        session.info.setdefault("threads", set()).add(threading.current_thread().name)

    event.listen(session_factory, "after_transaction_create", tag)
    yield
    event.remove(session_factory, "after_transaction_create", tag)


def open_worker_sessions():
    """Sessions begun on a task worker thread that are still in a transaction."""
    gc.collect()
    # SQLAlchemy's registry of live Sessions: the one place that lists every thread's Session.
    return [s.info["threads"] for s in list(orm_session._sessions.values())
            if s.in_transaction() and any(t.startswith("task-worker")
                                          for t in s.info.get("threads", ()))]


def test_task_sees_no_app_context_and_writes(runner):
    task_id = enqueue(runner, "probe")
    row = wait_finished([task_id])[task_id]
    assert row.status == "succeeded", row.error
    assert row.result["app_context"] is False
    assert users_named("probe") == 1


def test_no_connection_or_session_left_after_200_tasks(session_threads, runner, database):
    ids = [enqueue(runner, "probe") for _ in range(200)]
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"succeeded"}
    # Every task started on a fresh session, and every task's session was closed after it.
    assert not [r.id for r in rows.values() if r.result["session_at_start"]]
    # (Its status commits first, then its session is removed: the row can show succeeded
    # a moment before the session is gone, so wait for it rather than look once.)
    wait_for(lambda: not [task_id for task_id in ids if not inspect(PROBE_WRITES[task_id][1]).detached],
             message="every task's session to be removed")
    assert len({r.result["thread"] for r in rows.values()}) <= runner.config.workers
    assert users_named("probe") == 200
    wait_for(lambda: database.pool.checkedout() == 0, message="pool checked-out to reach 0")
    wait_for(lambda: not open_worker_sessions(), message="no worker session to stay open")


def test_failure_is_recorded_and_next_task_on_same_thread_succeeds(make_runner):
    runner = make_runner(workers=1)
    failing = enqueue(runner, "fail_always")
    following = enqueue(runner, "probe")
    rows = wait_finished([failing, following])
    failed, ok = rows[failing], rows[following]
    assert failed.status == "failed"
    assert failed.error == "ValueError: boom"
    assert 'raise ValueError("boom")' in failed.traceback
    assert failed.attempts == 1  # an ordinary exception is not retried
    assert users_named("must roll back") == 0
    assert ok.status == "succeeded", ok.error
    assert ok.result["session_at_start"] is False
    assert ok.result["thread"] == "task-worker-0"


def test_two_runners_on_one_database_run_each_task_once(database, make_runner):
    with db.session_scope() as s:
        for n in range(500):
            tasks.insert_task(s, "create_user", {"name": f"user {n}", "age": 1, "delay": 0.0})
    first, second = make_runner(), make_runner()
    with db.session_scope() as s:
        ids = s.scalars(select(Task.id)).all()
    rows = wait_finished(ids, timeout=120)
    assert {r.status for r in rows.values()} == {"succeeded"}
    assert {r.attempts for r in rows.values()} == {1}
    assert {r.owner for r in rows.values()} <= {first.owner, second.owner}
    with db.session_scope() as s:
        names = s.scalars(select(User.name)).all()
    assert len(names) == 500
    assert len(set(names)) == 500


def test_submit_beyond_the_backlog_bound_is_refused(make_runner, session):
    runner = make_runner(workers=0)
    submit.configure(3)
    for n in range(3):
        enqueue(runner, "noop")
    with pytest.raises(QueueFull):
        submit.enqueue(db.Session, "noop", {})
    session.rollback()
    assert count_rows(Task) == 3


def test_running_task_sees_cancel_and_writes_nothing(runner, session):
    task_id = enqueue(runner, "sleepy", {"seconds": 60})
    wait_status(task_id, "running")
    assert tasks.request_cancel(session, task_id) == tasks.CANCEL_REQUESTED
    session.commit()
    row = wait_status(task_id, "cancelled")
    assert row.finished_at is not None
    assert users_named("sleepy") == 0


def test_progress_is_visible_while_running(runner, session):
    task_id = enqueue(runner, "sleepy", {"seconds": 60})
    row = wait_for(lambda: task_row(task_id).progress == 50 and task_row(task_id),
                   message="progress 50")
    assert row.status == "running"
    assert row.message == "sleeping"
    tasks.request_cancel(session, task_id)
    session.commit()
    wait_status(task_id, "cancelled")


def test_transient_errors_are_retried_and_only_the_last_attempt_writes(runner):
    task_id = enqueue(runner, "flaky", {"times": 2})
    row = wait_finished([task_id])[task_id]
    assert row.status == "succeeded", row.error
    assert row.attempts == 3
    assert row.result == 3
    with db.session_scope() as s:
        assert s.scalars(select(User.name)).all() == ["flaky attempt 3"]


def test_transient_errors_fail_after_max_attempts(runner):
    task_id = enqueue(runner, "flaky", {"times": 99})
    row = wait_finished([task_id])[task_id]
    assert row.status == "failed"
    assert row.attempts == 5
    assert "database is locked" in row.error
    assert count_rows(User) == 0


def test_task_can_ask_for_a_retry_after_a_delay(runner):
    task_id = enqueue(runner, "retry_me", {"times": 1, "delay": 0.6})
    row = wait_finished([task_id])[task_id]
    assert row.status == "succeeded"
    assert row.result == 2
    assert row.run_after - row.created_at >= dt.timedelta(seconds=0.6)
    assert row.started_at >= row.run_after


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 30)]:
        delays = [backoff_seconds(attempt, base=1, cap=30) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_delayed_task_waits_until_run_after(runner):
    task_id = enqueue(runner, "noop", delay=0.8)
    row = wait_finished([task_id])[task_id]
    assert row.status == "succeeded"
    assert row.started_at >= row.created_at + dt.timedelta(seconds=0.8)


def test_time_limit_fails_the_task_and_discards_its_late_writes(make_runner):
    runner = make_runner(time_limit_grace=0.2)
    task_id = enqueue(runner, "stubborn", {"seconds": 1.5}, time_limit=0.3)
    row = wait_status(task_id, "failed")
    assert row.error == "time limit of 0.3s exceeded"
    wait_for(lambda: not runner.held(), message="the stubborn thread to return")
    row = task_row(task_id)
    assert row.status == "failed"
    assert row.result is None
    assert users_named("sleepy") == 0


def test_expired_lease_is_requeued_or_failed(database, make_runner):
    old = utcnow() - dt.timedelta(seconds=60)
    with db.session_scope() as s:
        ids = [tasks.insert_task(s, "probe", {}).id,
               tasks.insert_task(s, "probe", {}, max_attempts=1).id]
        s.execute(Task.__table__.update().values(
            status="running", owner="dead:1", heartbeat_at=old, attempts=1))
    make_runner(lease=1.0)
    rows = wait_finished(ids)
    assert rows[ids[0]].status == "succeeded"
    assert rows[ids[0]].attempts == 2
    assert rows[ids[1]].status == "failed"
    assert rows[ids[1]].error == "worker lost"
    assert users_named("probe") == 1


def test_stop_requeues_unfinished_tasks_and_a_new_runner_finishes_them(make_runner):
    first = make_runner(workers=2)
    ids = [enqueue(first, "sleepy", {"seconds": 30}) for _ in range(2)]
    ids += [enqueue(first, "noop", delay=30) for _ in range(3)]
    wait_for(lambda: all(task_row(i).status == "running" for i in ids[:2]), message="running")
    first.stop(grace=0.2)
    with db.session_scope() as s:
        rows = s.scalars(select(Task).where(Task.id.in_(ids))).all()
        assert {r.status for r in rows} == {"queued"}
        assert {r.attempts for r in rows} == {0}
        assert {r.owner for r in rows} == {None}
        s.execute(Task.__table__.update().values(run_after=utcnow()))
        s.execute(Task.__table__.update().where(Task.name == "sleepy").values(args={"seconds": 0}))
    assert users_named("sleepy") == 0
    make_runner(workers=2)
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"succeeded"}
    assert users_named("sleepy") == 2


def test_a_task_given_back_at_shutdown_keeps_its_place_in_the_queue(database):
    with db.session_scope() as s:
        first = tasks.insert_task(s, "noop", {}, run_after=utcnow() - dt.timedelta(seconds=1))
        second_id = tasks.insert_task(s, "noop", {}).id
        first_id, due = first.id, first.run_after
    with db.session_scope() as s:
        [claim] = claims.claim_unlimited(s, "stopping", 1)
        assert claim.id == first_id
    with db.session_scope() as s:
        assert attempt_writes.release_task(s, claim, "stopping", started=False)
    assert task_row(first_id).run_after == due  # not sent behind the tasks queued after it
    with db.session_scope() as s:
        taken = claims.claim_unlimited(s, "next", 2)
        assert [c.id for c in taken] == [first_id, second_id]
    with db.session_scope() as s:  # one that ran when it was cut short is due from now
        assert attempt_writes.release_task(s, taken[0], "next", started=True)
    assert task_row(first_id).run_after > due + dt.timedelta(seconds=0.5)


def test_unknown_name_in_the_table_fails_without_running(database, runner):
    with db.session_scope() as s:
        task_id = tasks.insert_task(s, "from_a_newer_version", {}).id
    runner.wake()
    row = wait_finished([task_id])[task_id]
    assert row.status == "failed"
    assert "unknown task 'from_a_newer_version'" in row.error


def test_result_that_cannot_be_stored_fails_the_task(runner):
    task_id = enqueue(runner, "unstorable")
    row = wait_finished([task_id])[task_id]
    assert row.status == "failed"
    assert row.error.startswith("TypeError")


def test_runner_threads_are_fixed_and_stop_with_it(make_runner):
    before = threading.active_count()
    runner = make_runner(workers=3)
    own = 3 + 1 + (BACKEND == "postgresql")  # workers, the dispatcher, and where it can, a listener
    assert threading.active_count() == before + own
    ids = [enqueue(runner, "noop") for _ in range(50)]
    wait_finished(ids)
    assert threading.active_count() == before + own
    runner.stop(grace=1)
    wait_for(lambda: threading.active_count() == before, message="runner threads to exit")


def test_work_is_picked_up_by_wake_ups_not_by_polling(make_runner):
    # With a poll interval far beyond the timeout, only wake-ups (a submit, a
    # worker finishing) can move the queue.
    runner = make_runner(workers=2, prefetch=0, poll_interval=60)
    for _ in range(5):
        ids = [enqueue(runner, "noop") for _ in range(40)]
        rows = wait_finished(ids, timeout=20)
        assert {r.status for r in rows.values()} == {"succeeded"}


def test_prefetch_bounds_how_many_tasks_a_runner_holds(make_runner, session):
    runner = make_runner(workers=2, prefetch=1)
    ids = [enqueue(runner, "sleepy", {"seconds": 60}) for _ in range(6)]
    held = {"running": 2, "reserved": 1, "queued": 3}  # 2 busy workers + 1 prefetched, not running
    wait_for(lambda: statuses_counted(ids) == held, message="2 running, 1 reserved")
    beat = task_row(ids[0]).heartbeat_at
    wait_for(lambda: task_row(ids[0]).heartbeat_at > beat, message="a dispatcher round")
    assert statuses_counted(ids) == held  # and no more are claimed
    for task_id in ids:
        tasks.request_cancel(session, task_id)
    session.commit()
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"cancelled"}


def statuses(ids):
    with db.session_scope() as s:
        return set(s.scalars(select(Task.status).where(Task.id.in_(ids))))


@sqlite_only
def test_finishing_tasks_claim_the_next_batch_in_their_own_transaction(make_runner, monkeypatch):
    # The dispatcher's own claim would queue for SQLite's write lock behind busy workers.
    claimed_by = []
    claim = claims.claim_unlimited

    def recording(session, owner, limit, queues=None, **options):
        taken = claim(session, owner, limit, queues, **options)
        claimed_by.extend(threading.current_thread().name for _ in taken)
        return taken

    monkeypatch.setattr(claims, "claim_unlimited", recording)
    ids = queue_rows(200)
    make_runner(workers=2)
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"succeeded"}
    assert {r.attempts for r in rows.values()} == {1}
    assert len(claimed_by) == 200  # each task claimed once
    assert sum(name.startswith("task-worker") for name in claimed_by) >= 20


@pytest.fixture
def lone_dispatcher(database):
    """A dispatcher without its thread (only the test claims), 3 due tasks, a session to claim
    them in, and the dispatcher's stop signal."""
    config = RunnerConfig(workers=1, **FAST_RUNNER)
    process = RunnerProcess(config, announce=lambda added: None)
    stopping = threading.Event()
    dispatcher = Dispatcher(config, process, Jobs(), stopping)
    ids = queue_rows(3)
    session = session_factory()
    yield dispatcher, ids, session, stopping
    session.close()
    process.close()


def assert_back_in_the_queue(dispatcher, ids):
    assert statuses(ids) == {"queued"}
    assert not dispatcher.process.held() and dispatcher.reserved == 0


@sqlite_only
def test_claims_in_a_task_commit_that_fails_are_not_kept(lone_dispatcher):
    dispatcher, ids, session, _ = lone_dispatcher
    with pytest.raises(RuntimeError):
        with dispatcher.finishing(session):
            raise RuntimeError("the commit failed")
    session.rollback()
    assert_back_in_the_queue(dispatcher, ids)


@sqlite_only
def test_claims_committed_while_stopping_go_back_to_the_queue(lone_dispatcher):
    dispatcher, ids, session, stopping = lone_dispatcher
    with dispatcher.finishing(session):
        stopping.set()  # shutdown begins while the claim is in its transaction
        session.commit()
    assert_back_in_the_queue(dispatcher, ids)


def test_a_claim_that_finds_nothing_leaves_the_surrounding_transaction_alone(database):
    # Data functions never end the caller's transaction: a claim may run inside a
    # finishing task's transaction, whose writes must survive an empty queue.
    session = session_factory()
    try:
        session.add(User(name="kept", age=1))
        session.flush()
        assert claims.claim_unlimited(session, "someone", 4) == []
        session.commit()
    finally:
        session.close()
    assert users_named("kept") == 1


@pytest.fixture
def worker_checkouts(database):
    """The DBAPI connections that task-worker-0 checks out of the pool, in order."""
    seen = []

    def record(dbapi_connection, *_):
        if threading.current_thread().name == "task-worker-0":
            seen.append(dbapi_connection)

    event.listen(database, "checkout", record)
    yield seen
    event.remove(database, "checkout", record)


def test_a_busy_worker_keeps_one_connection_and_gives_it_back_when_idle(
        database, make_runner, worker_checkouts):
    ids = queue_rows(200, "probe")
    make_runner(workers=1)
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"succeeded"}
    # Not one checkout per task but one per run of back-to-back tasks (seen: 2 on
    # SQLite, 15 on MariaDB, where the worker waits for the dispatcher now and then).
    assert len(worker_checkouts) <= len(ids) // 4
    wait_for(lambda: database.pool.checkedout() == 0, message="the idle worker's connection back")


def test_a_worker_between_tasks_keeps_its_connection_for_the_next_one(
        database, make_runner, worker_checkouts):
    runner = make_runner(workers=1)
    for _ in range(3):  # each queued once the one before has finished: the worker idles in between
        with db.session_scope() as s:
            task = submit.enqueue(s, "probe", {})
        wait_finished([task.id])
    # One checkout for all three: an idle pause shorter than IDLE_HOLD does not give it back
    # (which costs a checkout, and on MySQL the pool's ROLLBACK, per task).
    assert len(worker_checkouts) == 1
    assert runner.alive()


def test_a_task_that_loses_its_connection_leaves_the_next_one_a_working_one(make_runner):
    lost, *following = queue_rows(1, "drop_connection") + queue_rows(3, "probe")
    make_runner(workers=1)  # runs them back to back, on one held connection if it can
    rows = wait_finished([lost, *following])
    assert rows[lost].status == "failed"
    assert rows[lost].error.startswith("OperationalError")
    assert [rows[i].status for i in following] == ["succeeded"] * 3
    assert {rows[i].result["thread"] for i in following} == {"task-worker-0"}
    assert users_named("probe") == 3


def test_writes_on_the_sessions_own_connection_commit_with_the_task(make_runner):
    ids = queue_rows(3, "write_through_bind") + queue_rows(2, "probe")
    make_runner(workers=1)
    rows = wait_finished(ids)
    assert {r.status for r in rows.values()} == {"succeeded"}
    assert users_named("through bind") == 3
    assert users_named("probe") == 2


def cut_off(dbapi_connection):
    """Break a connection another thread holds, as a database restart would."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.close()
        return
    with db.session_scope() as s:
        s.execute(kill_connection_sql(s.get_bind().dialect.name, server_connection_id(dbapi_connection)))


def test_a_held_connection_left_unused_while_a_task_works_is_checked_before_use(
        make_runner, worker_checkouts, monkeypatch):
    monkeypatch.setattr(db.HeldConnection, "FRESH_FOR", 0.2)
    first, sleeper = queue_rows(1, "probe") + queue_rows(1, "sleepy", {"seconds": 1.0})
    make_runner(workers=1)  # claims both; the sleeper runs right after the probe
    wait_status(first, "succeeded")
    cut_off(worker_checkouts[-1])  # while the sleeper sleeps on the probe's connection
    row = wait_finished([sleeper])[sleeper]
    assert (row.status, row.attempts) == ("succeeded", 1), row.error
    assert users_named("sleepy") == 1
    assert len(worker_checkouts) == 2


def updates_sent(engine, session, write):
    """The UPDATE statements (with parameters) that write(session) sends."""
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        write(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
        session.rollback()
    return sent


@mysql_only
def test_updates_by_id_find_rows_by_primary_key_not_by_the_status_index(database, session):
    # Through the status index they would lock the index entries that finishing
    # tasks change, and deadlock with them (seen: heartbeats in the drain benchmark).
    now = utcnow()
    old = now - dt.timedelta(minutes=5)
    row = dict(name="noop", args={}, run_after=now, created_at=now, max_attempts=3,
               progress=0, cancel_requested=False)
    rows = [dict(row, status="succeeded", owner="other", heartbeat_at=now, attempts=1)] * 3000
    rows += [dict(row, status="running", owner="me", heartbeat_at=old, attempts=n % 4)
             for n in range(16)]
    rows += [dict(row, status="queued", owner=None, heartbeat_at=None, attempts=0)] * 8
    session.execute(Task.__table__.insert(), rows)
    session.commit()
    session.execute(text("ANALYZE TABLE tasks"))
    running = session.scalars(select(Task.id).where(Task.status == "running")).all()
    sent = updates_sent(database, session, lambda s: attempt_writes.heartbeat(s, "me", running))
    sent += updates_sent(database, session, lambda s: attempt_writes.recover_expired(s, 30))
    sent += updates_sent(database, session, lambda s: claims.claim_unlimited(s, "you", 8))
    assert len(sent) == 4  # the heartbeat, the two recovery updates and the claim
    for statement, parameters in sent:
        plan = session.connection().exec_driver_sql("EXPLAIN " + statement, parameters)
        assert [row.key for row in plan] == ["PRIMARY"], statement


def test_a_failed_checkout_for_a_held_connection_is_left_to_the_task(make_runner, monkeypatch):
    # Making a Session must not raise, even where the database cannot be reached:
    # the task's own Session meets the error where the runner handles errors.
    real_engine, refused = db.get_engine(), []

    class RefusingOnce:
        def connect(self):
            refused.append(threading.current_thread().name)
            monkeypatch.setattr(db.session, "get_engine", lambda: real_engine)
            raise OperationalError("connect", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(db.session, "get_engine", RefusingOnce)
    task_id = queue_rows(1, "probe")[0]
    make_runner(workers=1)
    row = wait_finished([task_id])[task_id]
    assert refused == ["task-worker-0"]
    assert (row.status, row.attempts) == ("succeeded", 1), row.error


def test_errors_named_in_retry_on_get_more_attempts_and_others_fail_at_once(runner):
    retried = enqueue(runner, "timeouts", {"times": 2})
    failed = enqueue(runner, "wrong_value")
    rows = wait_finished([retried, failed])
    assert (rows[retried].status, rows[retried].attempts) == ("succeeded", 3)
    assert (rows[failed].status, rows[failed].attempts) == ("failed", 1)
    assert "ValueError: not a timeout" in rows[failed].error
    assert users_named("after 3") == 1


def test_retry_on_takes_exception_classes_only():
    from marshmallow import Schema

    from service.runner import task

    with pytest.raises(TypeError, match="retry_on"):
        task("bad_retry_on", schema=Schema, retry_on=("TimeoutError",))
