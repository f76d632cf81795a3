"""Submits that need a transaction of their own commit together (service.runner.group_commit)."""
import contextlib
import multiprocessing
import threading

import pytest
from sqlalchemy import event, select, text

import db
from db.models import Task
from db.session import session_factory
from service.runner import group_commit, task_rows
from service.runner.registry import UnknownTask
from tests.conftest import backend, count_rows, wait_for

POISON = 77  # a priority the database refuses (a trigger): one bad row among good ones


@pytest.fixture
def commits(database):
    """The number of transactions committed on the engine."""
    counted = []
    listener = lambda connection: counted.append(1)  # noqa: E731
    event.listen(database, "commit", listener)
    yield counted
    event.remove(database, "commit", listener)


@pytest.fixture
def heard():
    """What the after-commit listener heard."""
    added = []
    listener = added.append
    task_rows.on_commit(listener)
    yield added
    task_rows.remove_listener(listener)


@pytest.fixture
def refuses_poison(database, db_url):
    """A trigger that makes the database refuse a task row with priority POISON."""
    with database.begin() as connection:
        if backend(db_url) == "sqlite":
            connection.execute(text(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks WHEN NEW.priority = {POISON} "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"))
        elif backend(db_url) == "postgresql":
            connection.execute(text(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.priority = {POISON} THEN RAISE EXCEPTION 'poisoned row'; END IF; "
                "RETURN NEW; END $$"))
            connection.execute(text("CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks "
                                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"))
        else:
            connection.execute(text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks FOR EACH ROW BEGIN "
                f"IF NEW.priority = {POISON} THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned row'; END IF; END"))
    yield
    with database.begin() as connection:
        if backend(db_url) == "postgresql":
            connection.execute(text("DROP TRIGGER refuse_poison ON tasks"))
            connection.execute(text("DROP FUNCTION refuse_poison()"))
        else:
            connection.execute(text("DROP TRIGGER refuse_poison"))


@contextlib.contextmanager
def first_insert_held(until):
    """Hold the first INSERT of task rows at the database until until() is true; yield an Event set
    when it got there. The first group is then being written, and later submits queue behind it."""
    engine, reached = db.get_engine(), threading.Event()

    def hold(connection, cursor, statement, parameters, context, executemany):
        if not reached.is_set() and statement.lstrip().upper().startswith("INSERT INTO TASKS"):
            reached.set()
            wait_for(until, message="the test to let the first group's INSERT go")
    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield reached
    finally:
        event.remove(engine, "before_cursor_execute", hold)


def submit_in_threads(group, submits, hold_first_write_until=None):
    """Run group.enqueue for each (args, options) on a thread of its own; return {index: Task or error}.

    hold_first_write_until: a predicate the first group's INSERT waits for, so that
    the others queue behind it and form the next group.
    """
    results = {}

    def one(index, args, options):
        try:
            results[index] = group.enqueue_and_commit(db.Session, "create_user", args, **options)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            results[index] = error
        finally:
            db.Session.remove()

    # Daemons: a submit left waiting forever fails the test instead of hanging pytest's exit.
    threads = [threading.Thread(target=one, args=(n, args, options), daemon=True)
               for n, (args, options) in enumerate(submits)]
    with contextlib.ExitStack() as stack:
        if hold_first_write_until:
            reached = stack.enter_context(first_insert_held(hold_first_write_until))
        threads[0].start()
        if hold_first_write_until:
            assert reached.wait(10)
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def assert_the_next_submit_leads_alone(group):
    """Nothing is left in the line: a lone submit is written at once, and nothing with it."""
    before, written = count_rows(Task), []

    def lone():
        written.append(group.enqueue_and_commit(db.Session, "create_user", user_args(99)))
        db.Session.remove()
    thread = threading.Thread(target=lone, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the next submit waits for a group nobody writes"
    assert written
    assert count_rows(Task) == before + 1


def user_args(n):
    return {"name": f"user {n}", "age": n, "delay": 0.0}


def test_a_lone_submit_commits_at_once_and_is_announced(session, commits, heard):
    task = group_commit.Group().enqueue_and_commit(session, "create_user", user_args(1), priority=3)
    assert len(commits) == 1
    with db.session_scope() as other:
        row = other.get(Task, task.id)
        assert (row.name, row.args, row.status, row.priority) == ("create_user", user_args(1), "queued", 3)
    assert [[(added.id, added.name) for added in batch] for batch in heard] == [[(task.id, "create_user")]]
    assert not session.info.get(task_rows.PENDING)  # the caller's own transaction holds nothing of it


def test_submits_that_arrive_while_a_group_writes_commit_together_in_one_transaction(
        database, commits, heard):
    group = group_commit.Group()
    submits = [(user_args(n), {}) for n in range(8)]
    results = submit_in_threads(group, submits, hold_first_write_until=lambda: group.waiting == 7)
    assert len(commits) == 2  # the first alone, then the seven that queued behind it
    assert [len(batch) for batch in heard] == [1, 7]
    with db.session_scope() as other:
        rows = {row.id: row.args for row in other.scalars(select(Task))}
    assert len(rows) == 8
    # Each submit got its own task back: the ids the database gave, in the right order.
    assert {n: rows[task.id] for n, task in results.items()} == {n: user_args(n) for n in range(8)}
    assert_the_next_submit_leads_alone(group)


def test_a_row_the_database_refuses_fails_only_its_own_submit(database, commits, refuses_poison):
    group = group_commit.Group()
    submits = [(user_args(n), {"priority": POISON if n == 4 else 0}) for n in range(6)]
    results = submit_in_threads(group, submits, hold_first_write_until=lambda: group.waiting == 5)
    assert "poisoned row" in str(results[4])
    good = {n: task.id for n, task in results.items() if n != 4}
    assert count_rows(Task) == 5
    with db.session_scope() as other:
        assert {n: other.get(Task, task_id).args for n, task_id in good.items()} == \
            {n: user_args(n) for n in good}


def test_an_invalid_submit_is_refused_before_it_joins_a_group(session, commits):
    with pytest.raises(UnknownTask):
        group_commit.Group().enqueue_and_commit(session, "no_such_task", {})
    with pytest.raises(ValueError):
        group_commit.Group().enqueue_and_commit(session, "create_user", user_args(1), priority=1000)
    assert not commits
    assert count_rows(Task) == 0


def test_a_database_error_reaches_every_submit_of_the_group_and_the_line_goes_on(
        database, refuses_poison):
    group = group_commit.Group()
    results = submit_in_threads(group, [(user_args(1), {"priority": POISON})])
    assert "poisoned row" in str(results[0])
    assert count_rows(Task) == 0
    assert_the_next_submit_leads_alone(group)


class Interrupted(BaseException):
    """What a thread can meet anywhere (a KeyboardInterrupt, a timeout of a green thread)."""


class InterruptedWhenWoken(threading.Event):
    """The wake of a submit on the thread named "doomed": woken (to lead), it is interrupted."""

    def wait(self, timeout=None):
        woken = super().wait(timeout)
        if threading.current_thread().name == "doomed":
            raise Interrupted
        return woken


def test_a_submit_interrupted_after_it_was_handed_the_lead_hands_it_on(database):
    group = group_commit.Group(wake_event=InterruptedWhenWoken)
    results = {}

    def one(name):
        try:
            results[name] = group.enqueue_and_commit(db.Session, "create_user", {"name": name, "age": 1})
        except BaseException as error:  # noqa: B036 - the test looks at it
            results[name] = error
        finally:
            db.Session.remove()
    threads = {name: threading.Thread(target=one, args=(name,), name=name, daemon=True)
               for name in ("first", "doomed", "last")}
    release = threading.Event()
    with first_insert_held(release.is_set) as reached:
        threads["first"].start()
        assert reached.wait(10)  # the first submit leads, and writes
        threads["doomed"].start()
        wait_for(lambda: group.waiting == 1, message="the doomed submit to queue")
        threads["last"].start()
        wait_for(lambda: group.waiting == 2, message="the last submit to queue behind it")
        release.set()  # the first group ends and hands the lead to the doomed submit
        for thread in threads.values():
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads.values())  # nobody waits forever
    assert isinstance(results["doomed"], Interrupted)
    with db.session_scope() as other:
        names = sorted(task.args["name"] for task in other.scalars(select(Task)))
    assert names == ["first", "last"]
    assert results["last"].id
    assert_the_next_submit_leads_alone(group)


def test_an_error_at_the_commit_reaches_the_whole_group_and_nothing_is_written_twice(
        database, monkeypatch):
    group = group_commit.Group()
    inserts = []
    insert_rows = task_rows.insert_rows
    monkeypatch.setattr(task_rows, "insert_rows", lambda session, rows: (inserts.append(len(rows)),
                                                                 insert_rows(session, rows))[1])

    def commit_fails(session):
        if session.info.get(task_rows.PENDING):
            raise RuntimeError("the commit failed")
    event.listen(session_factory, "before_commit", commit_fails)
    try:
        results = submit_in_threads(group, [(user_args(n), {}) for n in range(4)],
                                    hold_first_write_until=lambda: group.waiting == 3)
    finally:
        event.remove(session_factory, "before_commit", commit_fails)
    assert all("the commit failed" in str(result) for result in results.values())
    assert inserts == [1, 3]  # each group written once, never again row by row
    assert count_rows(Task) == 0


def test_a_forked_child_does_not_wait_for_a_group_its_parent_was_writing(database):
    release = threading.Event()
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    with first_insert_held(release.is_set) as reached:
        parent = threading.Thread(target=lambda: (
            group_commit.enqueue_and_commit(db.Session, "create_user", user_args(1)), db.Session.remove()),
            daemon=True)
        parent.start()
        try:
            # This process's group is being written at the fork (the child, forked after the
            # hold was reached, does not hold its own INSERT).
            assert reached.wait(10)
            child = context.Process(target=_submit_in_child, args=(result,))
            child.start()
            try:
                assert result.get(timeout=30) == "queued"  # its own line, led by its own submit
            finally:
                child.join(10)
                if child.is_alive():  # a child waiting for its parent's group would wait forever
                    child.kill()
        finally:
            release.set()
            parent.join(30)
    assert not parent.is_alive()
    assert count_rows(Task) == 2


def _submit_in_child(result):
    """In a forked child: submit alone through this module's group, on connections of its own."""
    try:
        db.get_engine().dispose(close=False)  # the parent's pooled connections stay the parent's
        session = session_factory()
        try:
            group_commit.enqueue_and_commit(session, "create_user", user_args(2))
        finally:
            session.close()
        result.put("queued")
    except Exception as error:  # noqa: BLE001 - the parent looks at it
        result.put(repr(error))
