"""Rate limits: no window of the declared length ever holds more starts than the limit, across
threads and processes, and a task put off by its rate keeps its attempt."""
import datetime as dt

import pytest
from sqlalchemy import select, update

import db
from db import attempt_writes, claims
from db.models import QUEUED, RESERVED, Task, TaskRateStart, utcnow
from service.runner import submit
from service.runner.limits import RateLimit, parse_rate
from service.runner.registry import TaskRegistry
from tests.conftest import FAST, count_rows, wait_finished
from tests.sample_tasks import Rated
from tests.server import Worker


def enqueue(session, name, count, **args):
    ids = [submit.enqueue(session, name, args).id for _ in range(count)]
    session.commit()
    return ids


def starts_of(rows):
    """The rows' started_at, sorted."""
    return sorted(row.started_at for row in rows)


def most_in_any_window(starts, window):
    """The most starts in any window [a, a + window) (starts sorted)."""
    most, first = 0, 0
    for last, start in enumerate(starts):
        while start - starts[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.parametrize("text, limit", [
    ("10/s", RateLimit(10, 1.0)), ("100/m", RateLimit(100, 60.0)), ("5/h", RateLimit(5, 3600.0)),
    ("3/10s", RateLimit(3, 10.0)), ("2/1.5m", RateLimit(2, 90.0)), (" 7 / 2h ", RateLimit(7, 7200.0)),
])
def test_a_rate_is_read_in_each_form(text, limit):
    assert parse_rate("t", text) == limit


@pytest.mark.parametrize("options, message", [
    ({"rate_limit": "10"}, "'N/s', 'N/m', 'N/h' or 'N/Ts'"),
    ({"rate_limit": "10/d"}, "'N/s', 'N/m', 'N/h' or 'N/Ts'"),
    ({"rate_limit": 10}, "'N/s', 'N/m', 'N/h' or 'N/Ts'"),
    ({"rate_limit": "0/s"}, "allows 1 to 1000000 starts"),
    ({"rate_limit": "1/0s"}, "more than 0 and at most a day"),
    ({"rate_limit": "1/25h"}, "more than 0 and at most a day"),
    ({"rate_key": "customer"}, "rate_key needs a rate_limit"),
    ({"rate_limit": "1/s", "rate_key": "nope"}, "rate_key 'nope' is not one of its arguments"),
])
def test_a_bad_rate_is_refused_in_one_line_naming_the_task(options, message):
    with pytest.raises(ValueError, match=message) as raised:
        TaskRegistry().task("mailer", schema=Rated, **options)
    assert "task 'mailer'" in str(raised.value) and "\n" not in str(raised.value)


def test_a_rate_limited_task_carries_its_key_limit_and_window(session):
    whole = submit.enqueue(session, "rated", {})
    acme = submit.enqueue(session, "rated_per_customer", {"customer": "acme"})
    session.commit()
    rows = {row.id: row for row in session.scalars(select(Task))}
    assert (rows[whole.id].rate_key, rows[whole.id].rate_limit, rows[whole.id].rate_window) == ("rated", 10, 1.0)
    assert rows[acme.id].rate_key == 'rated_per_customer:"acme"'
    assert rows[acme.id].limit_key == rows[acme.id].rate_key  # the limited claim takes it


def test_a_claim_takes_no_more_than_the_rate_has_room_for(session):
    enqueue(session, "rated_slowly", 5)
    taken = claims.claim_due(session, "one", 10)
    session.commit()
    assert len(taken) == 3  # reserved to start: the room of the minute
    for claim in taken:
        assert attempt_writes.start_task(session, claim, "one") == attempt_writes.STARTED
    session.commit()
    assert claims.claim_due(session, "two", 10) == []  # the three starts still count
    assert count_rows(TaskRateStart) == 3


def test_a_start_over_the_rate_goes_back_to_the_queue_with_its_attempt_not_counted(session):
    ids = enqueue(session, "rated_slowly", 5)
    # Reserved past the claim's check, as two claimers racing might: the start is the exact gate.
    session.execute(update(Task).values(status=RESERVED, owner="one", attempts=1, heartbeat_at=utcnow()))
    session.commit()
    rows = session.scalars(select(Task).order_by(Task.id)).all()
    outcomes = []
    for row in rows:
        claim = claims.Claim(row.id, row.name, row.args, 1, row.max_attempts, None, False, row.run_after,
                             rate_key=row.rate_key, rate_limit=row.rate_limit, rate_window=row.rate_window)
        outcomes.append(attempt_writes.start_task(session, claim, "one"))
        session.commit()
    assert outcomes == ["started"] * 3 + ["throttled"] * 2
    session.expire_all()
    rows = {row.id: row for row in session.scalars(select(Task))}
    first_start = rows[ids[0]].started_at
    for task_id in ids[3:]:
        row = rows[task_id]
        assert (row.status, row.attempts, row.owner, row.started_at) == (QUEUED, 0, None, None)
        # Due when the first of the three starts stops counting.
        assert row.run_after == first_start + dt.timedelta(seconds=60)


def test_four_workers_keep_two_keys_each_to_its_own_rate(make_runner, session):
    acme = enqueue(session, "rated_per_customer", 30, customer="acme")
    initech = enqueue(session, "rated_per_customer", 30, customer="initech")
    make_runner(poll_interval=0.5)
    rows = wait_finished(acme + initech, timeout=30)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}
    by_key = [starts_of([rows[i] for i in ids]) for ids in (acme, initech)]
    for starts in by_key:
        assert most_in_any_window(starts, dt.timedelta(seconds=1)) <= 10
    # Each key has its own 10/s: together 20 started in the first second.
    first = min(by_key[0][0], by_key[1][0])
    assert most_in_any_window(sorted(by_key[0] + by_key[1]), dt.timedelta(seconds=1)) == 20
    assert sum(start < first + dt.timedelta(seconds=1) for start in by_key[0] + by_key[1]) == 20


def test_three_processes_start_600_tasks_never_more_than_10_in_any_second(shared_db, tmp_path, processes):
    with db.session_scope() as session:
        ids = enqueue(session, "rated", 600)
    for n in range(3):
        processes.append(Worker(shared_db, tmp_path / f"w{n}.log", TASK_MODULES="tests.sample_tasks",
                                **{**FAST, "TASK_POLL_INTERVAL": 0.5}).start())
    rows = wait_finished(ids, timeout=90)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}  # put off, never a used attempt
    assert len({row.owner for row in rows.values()}) == 3
    starts = starts_of(rows.values())
    assert most_in_any_window(starts, dt.timedelta(seconds=1)) == 10
    assert starts[-1] - starts[0] < dt.timedelta(seconds=66)
