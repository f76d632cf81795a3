"""Fair share: among due tasks of one priority, claims take the keys of a fair task in turn,
so one key's backlog does not hold up another's."""
import datetime as dt
import types

import pytest
from sqlalchemy import func, select

import db
from db import claims, task_views
from db.claimer import Claimer
from db.models import QUEUED, RESERVED, Task, utcnow
from service.cli.text import task_lines
from service.runner import submit, task_rows
from service.runner.jobs import Jobs
from service.runner.registry import TaskRegistry, registry
from tests.conftest import count_rows, wait_for
from tests.sample_tasks import Customer, Rated


def queue_backlog(customer, count, name="fair_per_customer", seconds=0.0):
    """Queue count tasks of one customer in one statement, as a busy submitter would; their ids."""
    spec = registry.get(name)
    with db.session_scope() as session:
        rows = [task_rows.task_row(spec, {"customer": customer, "seconds": seconds}) for _ in range(count)]
        return [task.id for task in task_rows.insert_rows(session, rows)]


def customers_of(taken):
    """The customer of each claim, in claim order."""
    return [claim.args["customer"] for claim in taken]


@pytest.mark.parametrize("options, message", [
    ({"fair_key": "nope"}, "fair_key 'nope' is not one of its arguments"),
    ({"fair_key": "customer", "concurrency": 2}, "fair_key cannot be combined with concurrency or rate_limit"),
    ({"fair_key": "customer", "rate_limit": "5/s"}, "fair_key cannot be combined with concurrency or rate_limit"),
])
def test_a_bad_fair_declaration_is_refused_in_one_line_naming_the_task(options, message):
    with pytest.raises(ValueError, match=message) as raised:
        TaskRegistry().task("reports", schema=Rated, **options)
    assert "task 'reports'" in str(raised.value) and "\n" not in str(raised.value)


def test_a_key_queued_behind_a_backlog_takes_turns_with_it(session):
    queue_backlog("a", 10)
    queue_backlog("b", 3)
    taken = []
    for _ in range(8):  # a worker's claims, one at a time
        taken += claims.claim_unlimited(session, "w", 1)
        session.commit()
    assert customers_of(taken) == ["a", "b", "a", "b", "a", "b", "a", "a"]
    assert count_rows(Task, Task.status == RESERVED) == 8


def test_a_key_that_comes_later_starts_at_the_head_not_behind_what_was_claimed(session):
    queue_backlog("a", 10)
    first = claims.claim_unlimited(session, "w", 4)
    session.commit()
    queue_backlog("b", 2)
    queue_backlog("a", 2)  # a's new ones go behind its own backlog
    taken = claims.claim_unlimited(session, "w", 6)
    session.commit()
    assert customers_of(first) == ["a"] * 4
    assert customers_of(taken) == ["a", "b", "a", "b", "a", "a"]
    places = session.execute(select(Task.fair_key, func.count()).where(Task.status == QUEUED)
                             .group_by(Task.fair_key)).all()
    assert places == [('fair_per_customer:"a"', 2 + 2)]


def test_a_higher_priority_comes_first_and_plain_tasks_merge_in_claim_order(session):
    older = submit.enqueue(session, "noop", {}).id
    session.commit()
    queue_backlog("a", 2)
    queue_backlog("b", 1, name="fair_urgent")
    newer = submit.enqueue(session, "noop", {}).id
    session.commit()
    taken = claims.claim_due(session, "w", 5)
    session.commit()
    # fair_urgent's priority puts it first; the plain tasks keep their place in claim order
    assert [claim.name for claim in taken] == ["fair_urgent", "noop", "fair_per_customer", "fair_per_customer", "noop"]
    assert (taken[1].id, taken[4].id) == (older, newer)


def test_a_claim_gives_back_what_is_past_its_limit_unspent(session):
    ahead = queue_backlog("a", 3)
    submit.enqueue(session, "noop", {})
    session.commit()
    taken = claims.claim_unlimited(session, "w", 2)
    session.commit()
    assert [claim.id for claim in taken] == ahead[:2]
    rows = session.execute(select(Task.status, Task.attempts, Task.owner).where(Task.id.not_in(ahead[:2]))).all()
    assert rows == [(QUEUED, 0, None)] * 2


def test_fair_tasks_not_yet_due_wait_and_their_key_keeps_its_turns(session):
    spec = registry.get("fair_per_customer")
    with db.session_scope() as s:
        task_rows.insert_rows(s, [task_rows.task_row(spec, {"customer": "later"}, delay=60)])
    queue_backlog("now", 2)
    taken = claims.claim_unlimited(session, "w", 5)
    session.commit()
    assert customers_of(taken) == ["now", "now"]
    assert count_rows(Task, Task.status == QUEUED) == 1


def test_a_process_that_declares_no_fair_task_still_claims_the_ones_waiting(session):
    queue_backlog("a", 2)
    claimer = Claimer(lambda: False, lambda: False)
    taken = claimer.claim(session, "w", 5)
    session.commit()
    assert customers_of(taken) == ["a", "a"]


def test_the_api_the_dashboard_and_the_cli_show_a_fair_task_s_key_and_turn(client):
    ids = [client.post("/api/tasks", json={"name": "fair_per_customer", "args": {"customer": "acme"}, "delay": 600}).get_json()["id"]
           for _ in range(2)]
    key = 'fair_per_customer:"acme"'
    assert client.get(f"/api/tasks/{ids[1]}").get_json()["fair"] == {"key": key, "ahead": 1}
    assert client.get(f"/api/tasks/{ids[0]}").get_json()["fair"] == {"key": key, "ahead": 0}
    assert client.get(f"/api/tasks?name=fair_per_customer").get_json()[0]["fair"] == {"key": key, "ahead": 1}
    page = client.get(f"/dashboard/tasks/{ids[1]}?part=1").get_data(as_text=True)
    assert "takes turns as <code>fair_per_customer:&#34;acme&#34;</code> · 1 fair task ahead of it" in page
    with db.session_scope() as session:
        [task] = task_views.described(session, [session.get(Task, ids[1])])
        shown = "\n".join(task_lines(task, utcnow()))
    assert 'fair share:       key fair_per_customer:"acme"; 1 fair tasks ahead of it' in shown


def test_the_worker_queue_keeps_claim_order_within_a_priority_not_due_time():
    def attempt(task_id, seconds_ago, priority=0):
        claim = claims.Claim(task_id, "t", {}, 1, 3, None, False, utcnow() - dt.timedelta(seconds=seconds_ago), priority)
        return types.SimpleNamespace(claim=claim, abandoned=False)

    jobs = Jobs()
    for each in (attempt(2, 0), attempt(1, 60), attempt(3, 120), attempt(4, 0, priority=1)):
        jobs.put(each)  # a fair task due now, claimed in its turn before older ones
    assert [jobs.take_waiting().claim.id for _ in range(4)] == [4, 2, 1, 3]


def test_ten_tasks_of_one_key_start_within_two_seconds_while_another_drains_ten_thousand(make_runner):
    backlog = queue_backlog("a", 10_000, seconds=0.01)
    runner = make_runner(workers=4)
    wait_for(lambda: count_rows(Task, Task.status != QUEUED) >= 20, timeout=30, message="a's backlog to start")
    submitted = utcnow()
    late = queue_backlog("b", 10, seconds=0.01)
    wait_for(lambda: count_rows(Task, Task.id.in_(late), Task.started_at.is_not(None)) == 10,
             timeout=30, message="b's tasks to start")
    with db.session_scope() as s:
        last_start = s.scalar(select(func.max(Task.started_at)).where(Task.id.in_(late)))
        a_waiting = s.scalar(select(func.count()).where(Task.id.in_(backlog), Task.status == QUEUED))
        attempts = set(s.scalars(select(Task.attempts).where(Task.id.in_(late), Task.started_at.is_not(None))))
    runner.stop(grace=5)
    assert last_start - submitted < dt.timedelta(seconds=2)
    assert a_waiting > 9_000  # a's backlog was still there: b went through it, not after it
    assert attempts == {1}
