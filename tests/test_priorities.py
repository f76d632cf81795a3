"""Priorities and named queues: claim order, paused queues, TASK_QUEUES, and the API over them."""
import random

import pytest
from sqlalchemy import select

import db
from db import queues
from db.models import Task, TaskQueue
from service.config import ConfigError, load_config
from service.runner import submit
from service.runner.registry import registry, task
from tests.conftest import count_rows, wait_finished, wait_for
from tests.sample_tasks import RANKED_STARTS, NoArgs


@pytest.fixture(autouse=True)
def no_starts_recorded():
    RANKED_STARTS.clear()
    yield
    RANKED_STARTS.clear()


def queue_ranked(count, seed=20261130):
    """Queue count ranked tasks with priorities -5..5 (the rank is the priority), in one commit."""
    ranks = random.Random(seed).choices(range(-5, 6), k=count)
    with db.session_scope() as session:
        return [submit.enqueue(session, "ranked", {"rank": rank}, priority=rank).id for rank in ranks]


def claim_order(ids):
    """The ids as claims must take them: highest priority, then earliest due, then oldest."""
    with db.session_scope() as session:
        rows = session.execute(select(Task.id, Task.priority, Task.run_after).where(Task.id.in_(ids))).all()
    return [row.id for row in sorted(rows, key=lambda row: (-row.priority, row.run_after, row.id))]


def test_one_worker_runs_300_mixed_priorities_exactly_in_priority_order(make_runner):
    ids = queue_ranked(300)
    make_runner(workers=1)
    rows = wait_finished(ids)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert [task_id for task_id, _, _ in RANKED_STARTS] == claim_order(ids)


def test_four_workers_never_start_a_lower_priority_while_a_higher_one_waits(make_runner):
    ids = queue_ranked(300, seed=7)
    make_runner(workers=4)
    wait_finished(ids)
    assert len(RANKED_STARTS) == 300
    overtaken = [(rank, waiting) for _, rank, waiting in RANKED_STARTS if waiting is not None and waiting > rank]
    assert overtaken == []


def test_a_higher_priority_claimed_later_overtakes_the_claimed_ones_still_waiting(make_runner, session):
    runner = make_runner(workers=1, prefetch=8)
    busy = submit.enqueue(session, "sleepy", {"seconds": 3}).id
    session.commit()
    wait_for(lambda: count_rows(Task, Task.id == busy, Task.status == "running"), message="the busy task")
    low = [submit.enqueue(session, "ranked", {"rank": 0}).id for _ in range(3)]
    session.commit()
    wait_for(lambda: count_rows(Task, Task.id.in_(low), Task.status == "reserved") == 3,
             message="the low ones to be claimed")
    high = submit.enqueue(session, "ranked", {"rank": 5}, priority=5).id
    session.commit()
    wait_finished(low + [high, busy])
    assert [task_id for task_id, _, _ in RANKED_STARTS] == [high, *low]
    assert runner.alive()


def pause(name, paused=True):
    with db.session_scope() as session:
        queues.set_paused(session, name, paused)


def test_a_paused_queue_runs_nothing_until_resumed_and_other_queues_go_on(make_runner, session):
    pause("mail")
    mail = [submit.enqueue(session, "mail", {}).id for _ in range(20)]  # priority 7: first if claimable
    others = [submit.enqueue(session, "noop", {}).id for _ in range(20)]
    session.commit()
    runner = make_runner(workers=2)
    wait_finished(others)
    assert count_rows(Task, Task.id.in_(mail), Task.status == "queued") == 20
    assert count_rows(Task, Task.id.in_(mail), Task.attempts == 0) == 20
    pause("mail", False)
    runner.wake()
    rows = wait_finished(mail)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}


def test_a_process_serves_only_the_queues_in_task_queues(make_runner, session):
    mail = [submit.enqueue(session, "mail", {}).id for _ in range(10)]
    others = [submit.enqueue(session, "noop", {}).id for _ in range(10)]
    session.commit()
    general = make_runner(workers=2, queues=("default",))
    wait_finished(others)
    assert count_rows(Task, Task.id.in_(mail), Task.status == "queued") == 10
    mailer = make_runner(workers=2, queues=("mail",))
    rows = wait_finished(mail)
    assert {row.owner for row in rows.values()} == {mailer.owner}
    assert general.owner != mailer.owner


def test_a_task_declares_its_queue_and_default_priority_and_a_submit_may_override_it(session):
    queued = submit.enqueue(session, "mail", {})
    urgent = submit.enqueue(session, "mail", {}, priority=100)
    session.commit()
    rows = {row.id: row for row in session.scalars(select(Task))}
    assert (rows[queued.id].queue, rows[queued.id].priority) == ("mail", 7)
    assert rows[urgent.id].priority == 100
    declared = {registry.get(name).queue for name in registry.names()}
    assert registry.queues() == sorted({"default", "mail"} | declared)


@pytest.mark.parametrize("options, message", [
    ({"queue": "no spaces"}, "queue name"), ({"queue": ""}, "queue name"), ({"queue": "x" * 101}, "queue name"),
    ({"priority": 101}, "priority"), ({"priority": 1.5}, "priority"), ({"priority": True}, "priority"),
])
def test_bad_queue_or_priority_on_a_task_is_refused_when_it_is_declared(options, message):
    with pytest.raises(ValueError, match=message):
        task("never_registered", schema=NoArgs, **options)
    assert "never_registered" not in registry.names()


@pytest.mark.parametrize("value", ["mail,no spaces", "a/b", "x" * 101])
def test_bad_task_queues_name_the_setting(value):
    with pytest.raises(ConfigError, match="TASK_QUEUES"):
        load_config({"TASK_QUEUES": value})


def test_task_queues_reads_a_list():
    assert load_config({"TASK_QUEUES": " mail, default ,"})["TASK_QUEUES"] == ("mail", "default")
    assert load_config({})["TASK_QUEUES"] is None


# -- the API ---------------------------------------------------------------------


def test_submit_takes_a_priority_and_the_task_shows_its_queue(client):
    answer = client.post("/api/tasks", json={"name": "mail", "args": {}, "priority": -3})
    assert answer.status_code == 202
    shown = client.get(f"/api/tasks/{answer.json['id']}").json
    assert (shown["queue"], shown["priority"]) == ("mail", -3)
    assert client.post("/api/tasks", json={"name": "noop", "args": {}}).json["priority"] == 0


@pytest.mark.parametrize("priority", [101, -101, 1.5, "1", True])
def test_a_bad_priority_is_a_422_naming_the_field_and_writes_nothing(client, priority):
    answer = client.post("/api/tasks", json={"name": "noop", "args": {}, "priority": priority})
    assert answer.status_code == 422
    assert "priority" in answer.json["details"]["json"]
    assert count_rows(Task) == 0


def test_queues_are_listed_paused_and_resumed_through_the_api(make_app):
    # No runner, so the counts stay put (a stopped one starts again at the next request).
    client = make_app(TASK_WORKERS=0, TASK_QUEUES=("default", "mail", "reports")).test_client()
    for _ in range(3):
        client.post("/api/tasks", json={"name": "mail", "args": {}})
    listed = {q["name"]: q for q in client.get("/api/queues").json}
    assert listed["mail"] == {"name": "mail", "paused": False, "changed_at": None, "queued": 3,
                              "reserved": 0, "running": 0}
    assert listed["default"]["queued"] == 0
    paused = client.post("/api/queues/mail/pause")
    assert paused.status_code == 200 and paused.json["paused"] is True and paused.json["changed_at"]
    assert client.post("/api/queues/mail/pause").json["paused"] is True  # pausing twice is fine
    assert count_rows(TaskQueue, TaskQueue.paused.is_(True)) == 1
    assert client.post("/api/queues/mail/resume").json["paused"] is False
    assert count_rows(TaskQueue, TaskQueue.paused.is_(True)) == 0
    # A configured queue no task uses yet can be paused ahead of time.
    ahead = client.post("/api/queues/reports/pause").json
    assert (ahead["name"], ahead["paused"], ahead["queued"]) == ("reports", True, 0)
    assert "reports" in [q["name"] for q in client.get("/api/queues").json]


def test_a_typo_makes_no_queue_and_a_stray_record_can_be_removed(make_app):
    client = make_app(TASK_WORKERS=0).test_client()
    for action in ("pause", "resume"):
        answer = client.post(f"/api/queues/nosuch/{action}")
        assert answer.status_code == 404 and "queues: default, mail" in answer.json["message"]
    assert count_rows(TaskQueue) == 0
    assert "nosuch" not in [q["name"] for q in client.get("/api/queues").json]
    # A record no task declares any more (an old deploy's queue): listed, pausable, removable.
    with db.session_scope() as session:
        queues.set_paused(session, "old", True)
    assert "old" in [q["name"] for q in client.get("/api/queues").json]
    assert client.post("/api/queues/old/resume").status_code == 200
    assert client.delete("/api/queues/old").status_code == 204
    assert count_rows(TaskQueue) == 0
    assert client.delete("/api/queues/old").status_code == 404
    assert client.post("/api/queues/old/pause").status_code == 404
    # A declared queue, or one holding tasks, keeps its record.
    client.post("/api/queues/mail/pause")
    assert client.delete("/api/queues/mail").status_code == 409
    with db.session_scope() as session:
        queues.set_paused(session, "busy", False)
        session.add(Task(name="noop", args={}, queue="busy"))
    assert client.delete("/api/queues/busy").json["code"] == 409
    assert count_rows(TaskQueue) == 2


@pytest.mark.parametrize("path", ["/api/queues/no%20spaces/pause", "/api/queues/a%2Fb/resume",
                                  f"/api/queues/{'x' * 101}/pause"])
def test_a_name_no_queue_can_have_is_a_404_and_writes_nothing(client, path):
    answer = client.post(path)
    assert answer.status_code == 404 and answer.json["code"] == 404
    assert count_rows(TaskQueue) == 0


def test_the_dashboard_shows_queues_with_their_switch(client):
    client.post("/api/queues/mail/pause")
    html = client.get("/dashboard").get_data(as_text=True)
    assert 'data-queue="mail" class="paused"' in html
    assert 'data-queue-action="resume" data-queue-name="mail"' in html
    assert 'data-queue-action="pause" data-queue-name="default"' in html
