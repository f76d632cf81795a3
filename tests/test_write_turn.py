"""SQLite writers take turns on a lock file (db.dialects.sqlite_turn) instead of sleeping in the busy handler."""
import fcntl
import multiprocessing
import os
import queue
import threading

import pytest
from sqlalchemy import create_engine, exc, func, insert, select, text
from sqlalchemy.engine import make_url

import db
from db.dialects import SQLite, is_transient, sqlite_turn
from db.dialects.sqlite_turn import ProcessTurn, turn_path
from db.models import Base, User
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def database(empty_db):
    """The conftest fixture's database, its engine with the write turn."""
    engine = db.init_engine(empty_db, pool_size=20, max_overflow=10, write_turn=True)
    Base.metadata.create_all(engine)
    yield engine
    db.dispose_engine()


@pytest.fixture
def sqlite_only(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the write turn is SQLite's")


def turn_file(url):
    """The lock file of the database at url."""
    return turn_path(make_url(url).database)


def turn_is_free(url):
    """True if nobody holds the turn (asked from an open file of our own, as another process would)."""
    fd = os.open(turn_file(url), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def add_user(connection, name):
    connection.execute(insert(User).values(name=name, age=1))


def test_a_write_holds_the_turn_until_commit_or_rollback_and_a_read_takes_none(db_url, database):
    with database.connect() as connection:
        connection.execute(select(func.count()).select_from(User)).scalar()
        assert turn_is_free(db_url)  # reading takes no turn
        add_user(connection, "a")
        assert not turn_is_free(db_url)
        connection.commit()
        assert turn_is_free(db_url)
        connection.execute(text("UPDATE as_user SET us_age = 2"))  # text() writes take it too
        assert not turn_is_free(db_url)
        connection.rollback()
        assert turn_is_free(db_url)
    with database.connect() as connection:
        add_user(connection, "b")
    assert turn_is_free(db_url)  # a connection returned mid-transaction is rolled back: free again
    with database.connect() as connection:
        assert connection.execute(select(User.name)).scalars().all() == ["a"]


def test_a_waiting_writer_goes_on_when_the_turn_is_given_back(database):
    first = database.connect()
    add_user(first, "first")
    done = threading.Event()

    def second():
        with database.begin() as connection:
            add_user(connection, "second")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.3)  # it waits for the turn
    first.commit()
    first.close()
    thread.join(timeout=10)
    assert done.is_set()
    with database.connect() as connection:
        assert sorted(connection.execute(select(User.name)).scalars()) == ["first", "second"]


def test_a_writer_gives_up_after_the_busy_timeout_with_a_transient_error(db_url, database):
    impatient = turn_engine(db_url, busy_timeout=0.2)
    holder = database.connect()
    add_user(holder, "holder")
    try:
        with pytest.raises(exc.OperationalError, match="database is locked") as raised:
            with impatient.begin() as connection:
                add_user(connection, "late")
        assert is_transient(raised.value)  # a task meeting it is retried, a request gets a 503
    finally:
        holder.commit()
        holder.close()
        impatient.dispose()
    assert turn_is_free(db_url)


def turn_engine(url, busy_timeout=None):
    """An engine of its own, set up as db.init_engine sets up SQLite (the write turn included)."""
    options = SQLite().engine_options(make_url(url), 1, 0)
    if busy_timeout is not None:
        options["connect_args"]["timeout"] = busy_timeout
    engine = create_engine(url, **options)
    SQLite().instrument(engine)
    return engine


def _write_and_hold(url, started, release):
    """In another process: take the turn with an uncommitted write, hold it until told."""
    engine = turn_engine(url)
    with engine.connect() as connection:
        add_user(connection, "other process")
        started.set()
        release.wait(30)
        connection.commit()
    engine.dispose()


def test_writers_of_two_processes_take_turns_and_a_killed_holder_frees_the_turn(db_url, database):
    context = multiprocessing.get_context("fork")
    started, release = context.Event(), context.Event()
    child = context.Process(target=_write_and_hold, args=(db_url, started, release))
    child.start()
    try:
        assert started.wait(30)
        assert not turn_is_free(db_url)
        waiter = threading.Thread(target=lambda: _insert(database, "this process"))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # queued behind the other process's transaction
        release.set()
        waiter.join(30)
        assert not waiter.is_alive()
    finally:
        release.set()
        child.join(30)
    with database.connect() as connection:
        assert sorted(connection.execute(select(User.name)).scalars()) == ["other process", "this process"]

    # A process that dies holding the turn: the kernel gives the turn back.
    started, release = context.Event(), context.Event()
    child = context.Process(target=_write_and_hold, args=(db_url, started, release))
    child.start()
    assert started.wait(30)
    child.kill()
    child.join(30)
    wait_for(lambda: turn_is_free(db_url), message="the dead holder's turn to be free")
    _insert(database, "after the kill")
    with database.connect() as connection:
        assert "after the kill" in connection.execute(select(User.name)).scalars().all()


def _insert(engine, name):
    with engine.begin() as connection:
        add_user(connection, name)


def test_a_forked_child_does_not_inherit_a_turn_held_by_a_parent_thread(db_url, database):
    holder = database.connect()
    add_user(holder, "parent")  # this process's turn is held by this thread
    context = multiprocessing.get_context("fork")
    started, result = context.Event(), context.Queue()
    child = context.Process(target=_child_takes_a_turn, args=(db_url, started, result))
    try:
        child.start()
        assert started.wait(30)
        with pytest.raises(queue.Empty):  # it waits for the parent's turn, as another process would
            result.get(timeout=0.3)
    finally:
        holder.commit()
        holder.close()
    try:
        # Then it takes a turn of its own: an inherited one, held by a thread the child does
        # not have, would never come, and it would give up after its busy timeout.
        assert result.get(timeout=30) == "took a turn"
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert turn_is_free(db_url)  # the child's closing its copy of the file did not keep the lock


def _child_takes_a_turn(url, started, result):
    """In a forked child: take the write turn as a writer does, report how that went.

    It takes no more than the turn: SQLite's own lock state, copied by the fork from a
    parent in a transaction, would keep a child's write locked out until its busy timeout.
    """
    try:
        turn = sqlite_turn.process_turn(turn_file(url))
        started.set()
        turn.take(2)
        turn.give()
        result.put("took a turn")
    except Exception as error:  # noqa: BLE001 - the parent looks at it
        result.put(repr(error))


def _writer_thread(engine, name):
    """A thread that writes one row in a transaction of its own (waiting for its turn)."""
    thread = threading.Thread(target=_insert, args=(engine, name))
    thread.start()
    return thread


def _holder_and_waiter(db_url, database):
    """A connection holding the turn, and a thread of ours waiting to write after it."""
    holder = database.connect()
    add_user(holder, "first")
    waiter = _writer_thread(database, "second")
    # Counted as waiting, not merely started: a writer that comes after the commit takes a fresh turn.
    wait_for(lambda: sqlite_turn.process_turn(turn_file(db_url)).waiting == 1,
             message="the second writer to wait for its turn")
    return holder, waiter


def _file_unlocks(monkeypatch):
    """The list that each unlock of a lock file is added to from now on.

    Other processes see the turn's file and nothing else of it: whether it was
    freed between two writers is what tells a turn passed on from one given back.
    """
    unlocks, real_flock = [], fcntl.flock

    def flock(fd, op):
        if op == fcntl.LOCK_UN:
            unlocks.append(op)
        return real_flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", flock)
    return unlocks


def test_a_turn_passes_to_a_waiting_thread_of_the_same_process_without_freeing_the_file(
        db_url, database, monkeypatch):
    monkeypatch.setattr(sqlite_turn, "PASS_FOR", 30.0)
    holder, waiter = _holder_and_waiter(db_url, database)
    unlocks = _file_unlocks(monkeypatch)
    holder.commit()  # gives the turn: the waiter takes it with the file still locked
    holder.close()
    waiter.join(30)
    assert not waiter.is_alive()
    assert unlocks == [fcntl.LOCK_UN]  # once: after the second writer, nobody waited
    assert turn_is_free(db_url)
    with database.connect() as connection:
        assert sorted(connection.execute(select(User.name)).scalars()) == ["first", "second"]


def test_a_turn_is_not_passed_on_once_the_process_held_the_file_for_pass_for(
        db_url, database, monkeypatch):
    monkeypatch.setattr(sqlite_turn, "PASS_FOR", 0.0)
    holder, waiter = _holder_and_waiter(db_url, database)
    unlocks = _file_unlocks(monkeypatch)
    holder.commit()
    holder.close()
    waiter.join(30)
    assert not waiter.is_alive()
    assert unlocks == [fcntl.LOCK_UN] * 2  # the file was freed between the two, for other processes
    assert turn_is_free(db_url)


@pytest.fixture
def make_turn(db_url):
    """Build ProcessTurns of the test's own on the database's lock file; close their files after."""
    turns = []

    def make(lock=None):
        turns.append(ProcessTurn(turn_file(db_url), lock=lock))
        return turns[-1]
    yield make
    for turn in turns:
        turn.forget()  # closes its file, and with it any lock a failed test left on it


class SteeredLock:
    """A lock whose waits end as the test says: taken at once when free, else on_wait() decides."""

    def __init__(self, on_wait):
        self.real = threading.Lock()
        self.on_wait = on_wait

    def acquire(self, blocking=True, timeout=-1):
        if self.real.acquire(blocking=False):
            return True
        return self.on_wait() if blocking else False

    def release(self):
        self.real.release()


def test_a_waiter_that_gives_up_does_not_leave_a_passed_turn_holding_the_file(
        db_url, make_turn, monkeypatch):
    monkeypatch.setattr(sqlite_turn, "PASS_FOR", 30.0)
    timed_out, proceed = threading.Event(), threading.Event()

    def times_out_when_told():
        timed_out.set()
        proceed.wait(10)
        return False
    turn = make_turn(SteeredLock(times_out_when_told))
    turn.take(5)
    gave_up = []

    def impatient():
        try:
            turn.take(0.2)
        except Exception as error:  # sqlite3.OperationalError: database is locked
            gave_up.append(error)
    thread = threading.Thread(target=impatient)
    thread.start()
    assert timed_out.wait(10)  # counted as waiting, its wait about to time out
    turn.give()  # one still waits: the turn passes on to it with the file locked...
    assert not turn_is_free(db_url)
    proceed.set()  # ...and the waiter, timed out, now leaves
    thread.join(10)
    assert gave_up and "database is locked" in str(gave_up[0])
    assert turn_is_free(db_url)  # the leaving waiter freed the file nobody took
    turn.take(0.2)  # and the lock it was passed: the next writer gets the turn
    turn.give()


def test_a_waiter_interrupted_in_its_wait_is_no_longer_counted(db_url, make_turn, monkeypatch):
    monkeypatch.setattr(sqlite_turn, "PASS_FOR", 30.0)

    def interrupted():
        raise KeyboardInterrupt  # what can land in any wait
    turn = make_turn(SteeredLock(interrupted))
    turn.take(5)
    with pytest.raises(KeyboardInterrupt):
        turn.take(5)
    assert turn.waiting == 0
    turn.give()  # nobody waits: the file is freed, not passed on to the interrupted waiter
    assert turn_is_free(db_url)


def test_a_failing_unlock_still_ends_the_threads_turn(db_url, make_turn, monkeypatch):
    turn = make_turn()
    turn.take(5)
    real_flock = fcntl.flock

    def flock(fd, op):
        if op == fcntl.LOCK_UN:
            raise OSError("unlock failed")
        return real_flock(fd, op)
    with monkeypatch.context() as patched:
        patched.setattr(fcntl, "flock", flock)
        with pytest.raises(OSError):
            turn.give()
    turn.take(0.2)  # the next writer of this process is not stuck behind it
    turn.give()
    assert turn_is_free(db_url)
