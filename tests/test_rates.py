"""Rate limits: no window of the declared length ever holds more starts than the limit, across
threads and processes, and a task put off by its rate keeps its attempt."""
import datetime as dt
import re

import pytest
from sqlalchemy import func, select, update

import db
from db import attempt_writes, claims, publishing, stats, task_views
from db.models import QUEUED, RESERVED, Task, TaskRateStart, utcnow
from service.runner import submit
from service.runner.limits import RateLimit, parse_rate
from service.cli.text import stats_lines, task_lines
from service.runner.registry import TaskRegistry
from service.schemas import UtcDateTime
from tests.plans import sqlite_plans
from tests.conftest import FAST, count_rows, grown, most_in_any_window, scrape, wait_finished, wait_for
from tests.sample_tasks import Rated
from tests.server import Worker


def enqueue(session, name, count, **args):
    ids = [submit.enqueue(session, name, args).id for _ in range(count)]
    session.commit()
    return ids


def starts_of(rows):
    """The rows' started_at, sorted."""
    return sorted(row.started_at for row in rows)


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


def one_each(session, customers, per_customer):
    """Queue per_customer tasks of rated_slowly_one_each for each customer, in that order."""
    return [task_id for customer in customers for task_id in enqueue(session, "rated_slowly_one_each", per_customer,
                                                                        customer=customer)]


def test_a_claim_fills_the_rate_from_every_key_with_a_free_slot(session):
    # c0 c0 c1 c1 ...: each customer one slot, all of them 3 starts a minute.
    ids = one_each(session, ["c0", "c1", "c2", "c3", "c4"], 2)
    taken = claims.claim_due(session, "one", 10)
    session.commit()
    assert [claim.id for claim in taken] == [ids[0], ids[2], ids[4]]  # the first of c0, c1, c2
    assert claims.claim_due(session, "two", 10) == []


def test_the_relay_publishes_what_fits_counting_what_it_published_before(session):
    ids = one_each(session, ["c0", "c1", "c2", "c3", "c4"], 2)
    assert [task_id for task_id, _ in publishing.take_unpublished(session, 10, None, 0)] == [ids[0], ids[2], ids[4]]
    session.commit()
    # Published and not yet claimed: they hold the rate's room, so nothing more goes out.
    assert publishing.take_unpublished(session, 10, None, 0) == []


def test_a_claim_that_takes_the_last_room_says_none_is_left(session):
    """So the next claims leave the limited step out for a moment, not read the backlog again."""
    enqueue(session, "rated_slowly", 5)  # 3 starts a minute
    heard = []
    taken = claims.claim_due(session, "one", 10, on_full=lambda when, none_open: heard.append((when, none_open)))
    session.commit()
    assert len(taken) == 3
    assert heard == [(None, True)]  # full, and no logged start to wait for yet: reserved ones hold it


def test_a_sqlite_claim_finds_its_rows_by_id_and_its_waiting_keys_on_their_own_index(database, session):
    """An UPDATE by ids went through the claim index's status term, reading every queued row,
    and the waiting keys were grouped from every waiting row in a temporary B-tree."""
    if database.dialect.name != "sqlite":
        pytest.skip("SQLite's planner picks its index without statistics; MySQL's by its own")
    enqueue(session, "rated_slowly", 5)
    enqueue(session, "noop", 5)

    def work():
        claims.claim_due(session, "one", 10)
        session.rollback()
    plans = sqlite_plans(database, work, kinds=("SELECT", "UPDATE"))
    updates = [plan for statement, plan in plans if statement.startswith("UPDATE tasks")]
    assert len(updates) >= 2  # the plain claim and the limited one
    for plan in updates:
        assert plan[0] == "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)", plan
    [keys] = [plan for statement, plan in plans if "GROUP BY tasks.limit_key, tasks.rate_key" in statement]
    assert "COVERING INDEX ix_tasks_limit_groups" in keys[0] and not any("TEMP B-TREE" in step for step in keys), keys


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


def test_the_api_the_overview_and_metrics_say_a_task_waits_for_its_rate_limit(client):
    from service.runner import outcomes
    from service.runner.attempt import Attempt

    ids = [client.post("/api/tasks", json={"name": "rated_slowly"}).get_json()["id"] for _ in range(5)]
    wait_for(lambda: count_rows(Task, Task.status == "succeeded") == 3, message="the minute's three to run")
    with db.session_scope() as session:
        first_start = session.scalar(select(func.min(Task.started_at)))
    room_at = UtcDateTime().serialize("at", {"at": first_start + dt.timedelta(seconds=60)})
    use = {"key": "rated_slowly", "starts": 3, "seconds": 60.0, "started": 3, "reserved": 0, "queued": 2,
           "full": True, "room_at": room_at}
    waiting = client.get(f"/api/tasks/{ids[4]}").get_json()
    assert (waiting["status"], waiting["attempts"], waiting["rate"]) == ("queued", 0, {**use, "waiting": True})
    ran = client.get(f"/api/tasks/{ids[0]}").get_json()
    assert (ran["status"], ran["rate"]["waiting"]) == ("succeeded", False)
    assert client.get("/api/stats").get_json()["rate_limits"] == [use]
    assert client.get("/api/tasks?name=noop").get_json() == []  # a page without rate-limited tasks
    page = client.get(f"/dashboard/tasks/{ids[4]}?part=1").get_data(as_text=True)
    assert "3 starts per 1m · 3 started in the last 1m" in page
    assert 'id="rate-waiting">waiting for its rate limit</strong>, room at <time' in page
    assert "waiting for its rate limit" not in client.get(f"/dashboard/tasks/{ids[0]}?part=1").get_data(as_text=True)
    overview = client.get("/dashboard?part=1").get_data(as_text=True)
    assert re.search(r'data-rate-key="rated_slowly">\s*<td><code>rated_slowly</code></td><td>3 per 1m</td>\s*'
                     r'<td class="num">3</td><td class="num">0</td><td class="num">2</td>\s*'
                     r'<td><strong class="status-cancelled">full</strong> till <time', overview)
    with db.session_scope() as session:  # the CLI's `tasks show` and `tasks stats`, from the same reads
        [task] = task_views.described(session, [session.get(Task, ids[4])])
        shown = "\n".join(task_lines(task, utcnow()))
        stats_text = "\n".join(stats_lines(stats.overview(session, 30)))
    assert "rate limit:       3 starts per 1m, key rated_slowly; 3 started in the last 1m; waiting for its rate limit, room at" in shown
    assert re.search(r"rated_slowly +3/1m +3 +0 +2 +full till ", stats_text)

    # A start that finds no room (two claimers racing) is put off and counted as throttled.
    before = scrape(client)
    with db.session_scope() as session:
        session.execute(update(Task).where(Task.id == ids[4]).values(
            status=RESERVED, owner="racer", attempts=1, heartbeat_at=utcnow()))
        row = session.get(Task, ids[4])
        claim = claims.Claim(row.id, row.name, row.args, 1, row.max_attempts, None, False, row.run_after,
                             rate_key=row.rate_key, rate_limit=row.rate_limit, rate_window=row.rate_window)
    assert outcomes.started(Attempt(claim), "racer") is False
    assert grown(before, scrape(client), "tasks_throttled_total") == {'{name="rated_slowly"}': 1.0}
    put_off = client.get(f"/api/tasks/{ids[4]}").get_json()
    assert (put_off["status"], put_off["attempts"], put_off["run_after"]) == ("queued", 0, room_at)
