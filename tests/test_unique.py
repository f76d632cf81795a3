"""Unique tasks: Idempotency-Key and unique_key=, race-free on both databases."""
import concurrent.futures
import datetime as dt

import pytest
from sqlalchemy import select, update

import db
from db import stats
from db.models import Task, TaskKey, utcnow
from service.runner import KeyReused, submit
from tests.conftest import count_rows, wait_finished

KEY = {"Idempotency-Key": "order-42"}
BODY = {"name": "create_user", "args": {"name": "once", "age": 3}}


def post(client, body=BODY, headers=KEY):
    return client.post("/api/tasks", json=body, headers=headers)


def test_fifty_concurrent_submits_with_one_key_from_ten_threads_make_one_task(app):
    def submit_one(_):
        answer = app.test_client().post("/api/tasks", json=BODY, headers=KEY)
        return answer.status_code, answer.json["id"]

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(submit_one, range(50)))
    assert len({task_id for _, task_id in answers}) == 1
    assert sorted(status for status, _ in answers) == [200] * 49 + [202]
    assert count_rows(Task) == 1 and count_rows(TaskKey) == 1
    rows = wait_finished([answers[0][1]])
    assert {row.status for row in rows.values()} == {"succeeded"}


def test_a_repeated_submit_answers_the_same_task_while_unfinished_and_within_the_window(client):
    first = post(client)
    assert first.status_code == 202
    again = post(client)
    assert again.status_code == 200 and again.json["id"] == first.json["id"]
    assert again.headers["Location"].endswith(f"/api/tasks/{first.json['id']}")
    wait_finished([first.json["id"]])
    after = post(client)  # finished, but within UNIQUE_WINDOW (a day by default)
    assert after.status_code == 200 and after.json["status"] == "succeeded"
    assert count_rows(Task) == 1


def test_after_the_window_the_key_makes_a_new_task(client):
    first = post(client).json["id"]
    wait_finished([first])
    with db.session_scope() as session:  # finished a day and a second ago
        session.execute(update(Task).where(Task.id == first).values(
            finished_at=utcnow() - dt.timedelta(days=1, seconds=1)))
    later = post(client)
    assert later.status_code == 202 and later.json["id"] != first
    assert post(client).json["id"] == later.json["id"]  # and the key names the new one now
    with db.session_scope() as session:
        assert session.scalar(select(TaskKey.task_id)) == later.json["id"]


def test_many_racing_for_an_expired_key_make_one_new_task(app, client):
    first = post(client).json["id"]
    wait_finished([first])
    with db.session_scope() as session:
        session.execute(update(Task).where(Task.id == first).values(
            finished_at=utcnow() - dt.timedelta(days=2)))

    def submit_one(_):
        answer = app.test_client().post("/api/tasks", json=BODY, headers=KEY)
        return answer.status_code, answer.json["id"]

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(submit_one, range(30)))
    assert sorted(status for status, _ in answers) == [200] * 29 + [202]
    assert len({task_id for _, task_id in answers} - {first}) == 1
    assert count_rows(Task) == 2


@pytest.mark.parametrize("other", [
    {"name": "create_user", "args": {"name": "twice", "age": 3}},
    {"name": "noop", "args": {}},
    {**BODY, "priority": 5},
    {**BODY, "delay": 60},
])
def test_the_same_key_with_another_body_is_a_422_and_writes_nothing(client, other):
    first = post(client).json["id"]
    refused = post(client, other)
    assert refused.status_code == 422
    assert "Idempotency-Key" in refused.json["details"]["headers"]
    assert f"task {first}" in refused.json["message"]
    assert count_rows(Task) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "é"])
def test_a_bad_key_is_a_422_naming_the_header(client, key):
    answer = post(client, headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert answer.status_code == 422
    assert "Idempotency-Key" in answer.json["details"]["headers"]
    assert count_rows(Task) == 0 and count_rows(TaskKey) == 0


def test_without_a_key_every_submit_is_a_new_task(client):
    assert {post(client, headers={}).json["id"] for _ in range(3)} == {1, 2, 3}
    assert count_rows(TaskKey) == 0


def test_unique_key_from_code_joins_the_callers_transaction(session):
    first = submit.enqueue(session, "noop", {}, unique_key="nightly")
    second = submit.enqueue(session, "noop", {}, unique_key="nightly")  # same transaction
    assert second.id == first.id
    session.rollback()  # the key goes with the task
    assert count_rows(TaskKey) == 0
    task, created = submit.enqueue_or_find(session, "noop", {}, unique_key="nightly")
    session.commit()
    assert created and count_rows(Task) == 1
    again, created = submit.enqueue_or_find(session, "noop", {}, unique_key="nightly")
    assert (again.id, created) == (task.id, False)
    with pytest.raises(KeyReused):
        submit.enqueue(session, "noop", {}, unique_key="nightly", priority=1)
    with pytest.raises(ValueError, match="unique key"):
        submit.enqueue(session, "noop", {}, unique_key="two words")


def test_pruning_a_finished_task_frees_its_key(session, runner):
    task = submit.enqueue(session, "noop", {}, unique_key="pruned")
    session.commit()
    wait_finished([task.id])
    with db.session_scope() as s:
        s.execute(update(Task).values(finished_at=utcnow() - dt.timedelta(days=30)))
    while True:
        with db.session_scope() as s:
            if not stats.roll_up(s):
                break
    with db.session_scope() as s:
        assert stats.prune_finished(s, dt.timedelta(days=7)) == 1
    assert count_rows(Task) == 0 and count_rows(TaskKey) == 0


def test_keys_differing_only_in_case_are_different_keys(client):
    first = post(client, headers={"Idempotency-Key": "order-aB3x"})
    second = post(client, headers={"Idempotency-Key": "order-Ab3X"})  # MySQL's default collation would call them one key
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json["id"] != second.json["id"] and count_rows(Task) == 2
