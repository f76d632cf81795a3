"""Wake-ups across hosts: on PostgreSQL a commit that queues tasks NOTIFYs, and every process
that runs tasks LISTENs and claims at once; elsewhere polling alone finds them."""
import datetime as dt
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

import db
from db import claims
from db.dialects import is_transient
from db.dialects.postgresql_notify import CHANNEL
from db.models import Task, utcnow
from tests.conftest import BACKEND, postgres_only, queue_rows, task_row, wait_for, wait_status
from tests.server_sql import kill_connection_sql


class Wakes:
    """A wake() that counts its calls."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.count += 1


def notices_until_marker(engine, write):
    """The payloads of the notices on CHANNEL that write(connection) causes, read on a
    connection of the test's own up to a marker notice sent after it."""
    listening = engine.raw_connection()
    try:
        psycopg_connection = listening.driver_connection
        psycopg_connection.autocommit = True
        psycopg_connection.execute(f"LISTEN {CHANNEL}")
        with engine.connect() as connection:
            write(connection)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_notify(:channel, 'marker')"), {"channel": CHANNEL})
            connection.commit()
        payloads = []
        for notice in psycopg_connection.notifies(timeout=10):
            if notice.payload == "marker":
                return payloads
            payloads.append(notice.payload)
        raise AssertionError(f"no marker notice; got {payloads}")
    finally:
        psycopg_connection.execute(f"UNLISTEN {CHANNEL}")
        listening.close()


def insert_queued(connection, n=1):
    connection.execute(Task.__table__.insert(), [dict(name="noop", args={}, status="queued",
                                                       max_attempts=1, progress=0, cancel_requested=False)] * n)


@postgres_only
def test_a_committed_insert_notifies_once_and_a_rolled_back_one_never(database):
    def write(connection):
        insert_queued(connection)
        connection.rollback()  # a submit that failed: nobody may hear of it
        insert_queued(connection, 50)
        insert_queued(connection, 2)
        connection.commit()  # one transaction, two statements, 52 tasks: one notice
    assert notices_until_marker(database, write) == [""]


@postgres_only
def test_a_task_given_back_to_the_queue_notifies_and_other_status_changes_do_not(database):
    [task_id] = queue_rows(1)

    def write(connection):
        for status in ("reserved", "running", "queued", "succeeded"):
            connection.execute(text("UPDATE tasks SET status = :status WHERE id = :id"),
                               {"status": status, "id": task_id})
            connection.commit()
    assert notices_until_marker(database, write) == [""]  # only running -> queued


@postgres_only
def test_a_listener_wakes_on_each_commit_and_listens_again_when_its_connection_is_cut(database):
    wakes = Wakes()
    listener = db.listen_for_queued(wakes)
    try:
        wait_for(lambda: listener.listening.is_set(), message="the listener to listen")
        wait_for(lambda: wakes.count == 1, message="the wake-up that follows connecting")
        queue_rows(1)
        wait_for(lambda: wakes.count == 2, message="a wake-up for a committed task")
        with database.connect() as connection:
            pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE query = :listen"),
                                      {"listen": f"LISTEN {CHANNEL}"}).scalars().all()
            for pid in pids:  # as a database restart would
                connection.execute(kill_connection_sql("postgresql", pid))
        wait_for(lambda: listener.connects == 2, message="the listener to connect again")
        wait_for(lambda: wakes.count == 3, message="the wake-up after reconnecting")
        queue_rows(1)
        wait_for(lambda: wakes.count == 4, message="a wake-up on the new connection")
    finally:
        listener.stop()
    assert not listener.listening.is_set()


@postgres_only
def test_a_runner_that_seldom_polls_starts_a_task_another_process_queued_at_once(database, make_runner):
    make_runner(workers=1, poll_interval=60.0)
    wait_for(lambda: listeners(database) >= 1, message="the runner to listen")
    # Straight into the table, as another host would: this process hears nothing else of it.
    # One after another, so that only the first may meet a claim the runner makes anyway.
    for _ in range(3):
        with database.connect() as connection:
            insert_queued(connection)
            connection.commit()
            task_id = connection.execute(text("SELECT max(id) FROM tasks")).scalar_one()
        wait_status(task_id, "succeeded", timeout=10)  # well before its next poll


def listeners(engine):
    """How many connections to the database listen for queued tasks."""
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE query = :listen"),
                                  {"listen": f"LISTEN {CHANNEL}"}).scalar_one()


def test_only_postgresql_listens(database):
    listener = db.listen_for_queued(lambda: None)
    try:
        assert (listener is not None) == (BACKEND == "postgresql")
    finally:
        if listener is not None:
            listener.stop()


@postgres_only
def test_a_retry_due_later_and_a_claim_handing_back_its_extra_notify_nobody(database):
    [task_id] = queue_rows(1)
    params = {"id": task_id, "later": utcnow() + dt.timedelta(minutes=5), "owner": "me"}

    def write(_):
        with db.session_scope() as session:  # a failed attempt retried in five minutes
            session.execute(text("UPDATE tasks SET status = 'running' WHERE id = :id"), params)
        with db.session_scope() as session:
            session.execute(text("UPDATE tasks SET status = 'queued', run_after = :later WHERE id = :id"),
                            params)
        with db.session_scope() as session:  # reserved past a claim's limit, handed back unseen
            session.execute(text("UPDATE tasks SET status = 'reserved', owner = :owner, run_after = now() "
                                 "AT TIME ZONE 'UTC', attempts = 1 WHERE id = :id"), params)
            claims.give_back(session, [task_id], "me")
    assert notices_until_marker(database, write) == []
    assert task_row(task_id).status == "queued"


@postgres_only
def test_a_refused_connection_is_worth_another_attempt(database):
    refused = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none",
                            connect_args={"connect_timeout": 2})
    try:
        with pytest.raises(DBAPIError) as raised:
            refused.connect()
    finally:
        refused.dispose()
    assert is_transient(raised.value)  # a task meeting it is retried, a request gets a 503
