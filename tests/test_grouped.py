"""Submits that need a transaction of their own commit together (service.runner.grouped)."""
import threading

import pytest
from sqlalchemy import event, select, text

import db
from db.models import Task
from db.session import session_factory
from service.runner import grouped, submit
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
    submit.on_commit(listener)
    yield added
    submit.remove_listener(listener)


@pytest.fixture
def refuses_poison(database, db_url):
    """A trigger that makes the database refuse a task row with priority POISON."""
    with database.begin() as connection:
        if backend(db_url) == "sqlite":
            connection.execute(text(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks WHEN NEW.priority = {POISON} "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"))
        else:
            connection.execute(text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON tasks FOR EACH ROW BEGIN "
                f"IF NEW.priority = {POISON} THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned row'; END IF; END"))
    yield
    with database.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_poison"))


def submit_in_threads(group, submits, hold_first_write_until=None):
    """Run group.enqueue for each (args, options) on a thread of its own; return {index: Task or error}.

    hold_first_write_until: a predicate the first group's write waits for, so that
    the others queue behind it and form the next group.
    """
    results = {}
    write = grouped._write
    held = threading.Event()

    def first_write_waits(line):
        if not held.is_set():
            held.set()
            wait_for(hold_first_write_until, message="the other submits to queue")
        write(line)

    def one(index, args, options):
        try:
            results[index] = group.enqueue(db.Session, "create_user", args, **options)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            results[index] = error
        finally:
            db.Session.remove()

    original, grouped._write = grouped._write, first_write_waits if hold_first_write_until else write
    try:
        threads = [threading.Thread(target=one, args=(n, args, options))
                   for n, (args, options) in enumerate(submits)]
        threads[0].start()
        if hold_first_write_until:
            assert held.wait(10)
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        grouped._write = original
    return results


def user_args(n):
    return {"name": f"user {n}", "age": n, "delay": 0.0}


def test_a_lone_submit_commits_at_once_and_is_announced(session, commits, heard):
    task = grouped.Group().enqueue(session, "create_user", user_args(1), priority=3)
    assert len(commits) == 1
    with db.session_scope() as other:
        row = other.get(Task, task.id)
        assert (row.name, row.args, row.status, row.priority) == ("create_user", user_args(1), "queued", 3)
    assert [[(added.id, added.name) for added in batch] for batch in heard] == [[(task.id, "create_user")]]
    assert not session.info.get(submit.PENDING)  # the caller's own transaction holds nothing of it


def test_submits_that_arrive_while_a_group_writes_commit_together_in_one_transaction(
        database, commits, heard):
    group = grouped.Group()
    submits = [(user_args(n), {}) for n in range(8)]
    results = submit_in_threads(group, submits, hold_first_write_until=lambda: len(group._line) == 7)
    assert len(commits) == 2  # the first alone, then the seven that queued behind it
    assert [len(batch) for batch in heard] == [1, 7]
    with db.session_scope() as other:
        rows = {row.id: row.args for row in other.scalars(select(Task))}
    assert len(rows) == 8
    # Each submit got its own task back: the ids the database gave, in the right order.
    assert {n: rows[task.id] for n, task in results.items()} == {n: user_args(n) for n in range(8)}
    assert not group._writing and not group._line


def test_a_row_the_database_refuses_fails_only_its_own_submit(database, commits, refuses_poison):
    group = grouped.Group()
    submits = [(user_args(n), {"priority": POISON if n == 4 else 0}) for n in range(6)]
    results = submit_in_threads(group, submits, hold_first_write_until=lambda: len(group._line) == 5)
    assert "poisoned row" in str(results[4])
    good = {n: task.id for n, task in results.items() if n != 4}
    assert count_rows(Task) == 5
    with db.session_scope() as other:
        assert {n: other.get(Task, task_id).args for n, task_id in good.items()} == \
            {n: user_args(n) for n in good}


def test_an_invalid_submit_is_refused_before_it_joins_a_group(session, commits):
    with pytest.raises(UnknownTask):
        grouped.Group().enqueue(session, "no_such_task", {})
    with pytest.raises(ValueError):
        grouped.Group().enqueue(session, "create_user", user_args(1), priority=1000)
    assert not commits
    assert count_rows(Task) == 0


def test_a_database_error_reaches_every_submit_of_the_group_and_the_line_goes_on(
        database, refuses_poison):
    group = grouped.Group()
    results = submit_in_threads(group, [(user_args(1), {"priority": POISON})])
    assert "poisoned row" in str(results[0])
    assert group.enqueue(db.Session, "create_user", user_args(2)).id  # the next submit leads again
    db.Session.remove()
    assert count_rows(Task) == 1


class Interrupted(BaseException):
    """What a thread can meet anywhere (a KeyboardInterrupt, a timeout of a green thread)."""


def test_a_submit_interrupted_after_it_was_handed_the_lead_hands_it_on(database, monkeypatch):
    group = grouped.Group()

    class DoomedEvent(threading.Event):
        def wait(self, timeout=None):
            super().wait(timeout)
            raise Interrupted  # woken to lead, it never writes

    made = grouped._Waiting.__init__

    def waiting(self, row):
        made(self, row)
        if row["args"]["name"] == "doomed":
            self.woken = DoomedEvent()
    monkeypatch.setattr(grouped._Waiting, "__init__", waiting)
    release = threading.Event()
    write = grouped._write
    monkeypatch.setattr(grouped, "_write",
                        lambda line: (release.wait(10) if line[0].row["args"]["name"] == "first" else None,
                                      write(line))[1])
    results = {}

    def one(name):
        try:
            results[name] = group.enqueue(db.Session, "create_user", {"name": name, "age": 1})
        except BaseException as error:  # noqa: B036 - the test looks at it
            results[name] = error
        finally:
            db.Session.remove()
    threads = {name: threading.Thread(target=one, args=(name,)) for name in ("first", "doomed", "last")}
    threads["first"].start()
    wait_for(lambda: group._writing, message="the first submit to lead")
    threads["doomed"].start()
    wait_for(lambda: len(group._line) == 1, message="the doomed submit to queue")
    threads["last"].start()
    wait_for(lambda: len(group._line) == 2, message="the last submit to queue behind it")
    release.set()  # the first group ends and hands the lead to the doomed submit
    for thread in threads.values():
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads.values())  # nobody waits forever
    assert isinstance(results["doomed"], Interrupted)
    with db.session_scope() as other:
        names = sorted(task.args["name"] for task in other.scalars(select(Task)))
    assert names == ["first", "last"]
    assert results["last"].id and not group._writing and not group._line


def test_an_error_at_the_commit_reaches_the_whole_group_and_nothing_is_written_twice(
        database, monkeypatch):
    group = grouped.Group()
    inserts = []
    add_rows = submit.add_rows
    monkeypatch.setattr(submit, "add_rows", lambda session, rows: (inserts.append(len(rows)),
                                                                 add_rows(session, rows))[1])

    def commit_fails(session):
        if session.info.get(submit.PENDING):
            raise RuntimeError("the commit failed")
    event.listen(session_factory, "before_commit", commit_fails)
    try:
        results = submit_in_threads(group, [(user_args(n), {}) for n in range(4)],
                                    hold_first_write_until=lambda: len(group._line) == 3)
    finally:
        event.remove(session_factory, "before_commit", commit_fails)
    assert all("the commit failed" in str(result) for result in results.values())
    assert inserts == [1, 3]  # each group written once, never again row by row
    assert count_rows(Task) == 0


def test_a_forked_child_starts_with_an_empty_line(database):
    import multiprocessing

    grouped.group._writing = True  # as if a thread of ours were writing a group at the fork
    try:
        context = multiprocessing.get_context("fork")
        result = context.Queue()
        child = context.Process(target=lambda: result.put(
            (grouped.group._writing, len(grouped.group._line))))
        child.start()
        child.join(30)
        assert result.get(timeout=5) == (False, 0)
    finally:
        grouped.group._writing = False
