"""Counts of tasks: rolled up once, exact against COUNT(*), pruned without drift."""
import collections
import datetime as dt
import random
import threading

import pytest
from sqlalchemy import func, insert, select, update

import db
from db import runners, stats, tasks
from db.models import FINISHED_STATES, STATES, Task, TaskRollup, TaskTotal, Workflow, WorkflowNode, utcnow
from db.reset import reset_database_and_commit
from service.runner import enqueue, group
from tests.conftest import wait_for
from tests.plans import sqlite_plans
from tests.sample_tasks import step

NOW = utcnow()
NAMES = ("alpha", "beta", "gamma")


def add_tasks(session, n, seed=1, spread=dt.timedelta(hours=5), now=NOW, statuses=STATES):
    """n tasks of these statuses, finished over the last `spread` (as a drain leaves them)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        status = rng.choice(statuses)
        finished = now - rng.random() * spread if status in FINISHED_STATES else None
        rows.append(dict(name=rng.choice(NAMES), args={}, status=status, progress=0, attempts=1,
                         max_attempts=3, cancel_requested=False, run_after=now, created_at=now,
                         finished_at=finished))
    session.execute(insert(Task), rows)
    session.commit()


def counted(session, **where):
    """The slow, obvious count: COUNT(*) grouped by name and status."""
    query = select(Task.name, Task.status, func.count()).group_by(Task.name, Task.status)
    for column, value in where.items():
        query = query.where(getattr(Task, column) == value)
    return collections.Counter({(n, s): c for n, s, c in session.execute(query)})


def roll_all(session, now=NOW):
    steps = 0
    while stats.roll_up(session, now=now):
        session.commit()
        steps += 1
    session.commit()
    return steps


def start_rollup_at(session, when):
    session.execute(update(TaskRollup).values(rolled_until=stats.floor_minute(when)))
    session.commit()


def test_counts_are_exact_before_during_and_after_the_roll_up(session):
    start_rollup_at(session, NOW - dt.timedelta(hours=6))
    add_tasks(session, 3000)
    truth = counted(session)
    finished_truth = +collections.Counter({k: v for k, v in truth.items() if k[1] in FINISHED_STATES})
    assert stats.finished_counts(session) == finished_truth
    assert stats.roll_up(session, now=NOW)  # one step: part rolled, part not
    session.commit()
    assert stats.finished_counts(session) == finished_truth
    assert roll_all(session) > 1
    assert session.scalar(select(TaskRollup.rolled_until)) == stats.floor_minute(NOW - stats.ROLLUP_MARGIN)
    assert stats.finished_counts(session) == finished_truth
    for status in (None, *STATES):
        for name in (None, *NAMES):
            expected = sum(c for (n, s), c in truth.items()
                           if (status is None or s == status) and (name is None or n == name))
            assert stats.count_tasks(session, status, name) == expected, (status, name)


def test_finished_per_minute_matches_the_rows_rolled_or_not(session):
    start_rollup_at(session, NOW - dt.timedelta(hours=6))
    add_tasks(session, 2000, spread=dt.timedelta(minutes=90))
    before = stats.finished_per_minute(session, now=NOW)
    roll_all(session)
    after = stats.finished_per_minute(session, now=NOW)
    assert before == after
    assert len(after) == 60
    for minute, by_status in after:
        expected = dict(session.execute(
            select(Task.status, func.count())
            .where(Task.finished_at >= minute, Task.finished_at < minute + stats.MINUTE)
            .group_by(Task.status)).all())
        assert dict(by_status) == expected, minute


def test_two_processes_rolling_up_at_once_count_each_task_once(database):
    with db.session_scope() as session:
        start_rollup_at(session, NOW - dt.timedelta(hours=6))
        add_tasks(session, 4000)
        truth = +collections.Counter({k: v for k, v in counted(session).items()
                                      if k[1] in FINISHED_STATES})
    barrier = threading.Barrier(4)
    errors = []

    def roll():
        try:
            barrier.wait()
            for _ in range(200):
                with db.session_scope() as session:
                    stats.roll_up(session, now=NOW)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=roll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with db.session_scope() as session:
        rolled_until = session.scalar(select(TaskRollup.rolled_until))
        totals = collections.Counter({(t.name, t.status): t.count
                                      for t in session.scalars(select(TaskTotal))})
    assert rolled_until == stats.floor_minute(NOW - stats.ROLLUP_MARGIN)
    rows_before = collections.Counter()
    with db.session_scope() as session:
        rows_before.update({(n, s): c for n, s, c in session.execute(
            select(Task.name, Task.status, func.count())
            .where(Task.finished_at < rolled_until).group_by(Task.name, Task.status))})
    assert totals == rows_before
    with db.session_scope() as session:
        assert stats.finished_counts(session) == truth


def test_prune_deletes_only_old_finished_tasks_in_batches_and_keeps_counts_exact(session):
    start_rollup_at(session, NOW - dt.timedelta(days=10))
    add_tasks(session, 3000, spread=dt.timedelta(days=9))
    old_unfinished = tasks.insert_task(session, "alpha", {}).id
    session.execute(update(Task).where(Task.id == old_unfinished)
                    .values(created_at=NOW - dt.timedelta(days=9)))
    session.commit()
    roll_all(session)
    cutoff = NOW - dt.timedelta(days=7)
    expected_left = session.scalar(select(func.count()).select_from(Task).where(
        (Task.finished_at >= cutoff) | Task.finished_at.is_(None)))
    batches = []
    while True:
        deleted = stats.prune_finished(session, dt.timedelta(days=7), batch=100, now=NOW)
        session.commit()
        batches.append(deleted)
        if deleted < 100:
            break
    assert max(batches) == 100 and len(batches) > 2
    assert session.scalar(select(func.count()).select_from(Task)) == expected_left
    assert session.get(Task, old_unfinished).status == "queued"
    assert session.scalar(select(func.min(Task.finished_at))) >= cutoff
    truth = +collections.Counter({k: v for k, v in counted(session).items() if k[1] in FINISHED_STATES})
    assert stats.finished_counts(session) == truth


def test_prune_never_deletes_what_the_roll_up_has_not_counted(session):
    start_rollup_at(session, NOW - dt.timedelta(days=4))
    add_tasks(session, 200, spread=dt.timedelta(days=3))  # all after the watermark: none rolled
    assert stats.prune_finished(session, dt.timedelta(days=1), now=NOW) == 0
    session.commit()
    assert session.scalar(select(func.count()).select_from(Task)) == 200


def test_reset_forgets_the_counts_with_the_tasks(session):
    start_rollup_at(session, NOW - dt.timedelta(hours=6))
    add_tasks(session, 300)
    roll_all(session)
    reset_database_and_commit(session)
    assert stats.finished_counts(session) == collections.Counter()
    assert stats.count_tasks(session) == 0
    assert all(not counts for _, counts in stats.finished_per_minute(session, now=NOW))


def test_runner_records_show_busy_workers_and_lost_processes(session):
    runners.record_runner(session, "host:1:a", "host", 1, workers=4, busy=1, now=NOW)
    runners.record_runner(session, "host:2:b", "host", 2, workers=2, busy=0,
                          now=NOW - dt.timedelta(seconds=60))
    runners.record_runner(session, "host:1:a", "host", 1, workers=4, busy=3, now=NOW)
    session.commit()
    listed = {r["owner"]: r for r in runners.list_runners(session, lease_seconds=30, now=NOW)}
    assert listed["host:1:a"]["busy"] == 3 and not listed["host:1:a"]["lost"]
    assert listed["host:2:b"]["lost"]
    runners.forget_runner(session, "host:1:a")
    assert runners.forget_lost_runners(session, now=NOW + runners.FORGET_AFTER) == 1
    session.commit()
    assert runners.list_runners(session, lease_seconds=30, now=NOW) == []


def test_runners_roll_up_and_prune_on_their_heartbeat(make_runner, session):
    start_rollup_at(session, NOW - dt.timedelta(days=11))
    # Finished ones only: the runner would fail queued ones (unknown names) while we count.
    add_tasks(session, 400, spread=dt.timedelta(days=10), statuses=FINISHED_STATES)
    recent = session.scalar(select(func.count()).select_from(Task).where(
        (Task.finished_at >= NOW - dt.timedelta(days=7)) | Task.finished_at.is_(None)))
    truth = +collections.Counter({k: v for k, v in counted(session).items() if k[1] in FINISHED_STATES})
    session.remove()
    make_runner(workers=1, retention=7 * 86400)

    def pruned():
        with db.session_scope() as s:
            return s.scalar(select(func.count()).select_from(Task)) <= recent
    # The runner's cutoff is a moment later than NOW's: it may delete a row more.
    wait_for(pruned, message="tasks past retention to be deleted")
    with db.session_scope() as s:
        assert recent - 2 <= s.scalar(select(func.count()).select_from(Task)) <= recent
        assert s.scalar(select(func.min(Task.finished_at))) >= NOW - dt.timedelta(days=7)
        left = +collections.Counter({k: v for k, v in counted(s).items() if k[1] in FINISHED_STATES})
        assert stats.finished_counts(s) == left
        assert sum(left.values()) < sum(truth.values())


def test_counts_and_lists_never_read_the_whole_table(database, session):
    """At 10⁶ rows a full read costs 40-400 ms: SQLite chose ix_tasks_name_id for any GROUP BY name."""
    if database.dialect.name != "sqlite":
        pytest.skip("SQLite's planner picks its index without statistics; MySQL's by its own")
    add_tasks(session, 50)

    def work():
        stats.overview(session, 30)
        for status in (None, *STATES):
            for name in (None, "alpha"):
                tasks.list_tasks(session, 10, 0, status=status, name=name)
        session.rollback()

    for statement, plan in sqlite_plans(database, work):
        whole = [step for step in plan if step.startswith("SCAN tasks") and (
            step == "SCAN tasks" or "ix_tasks_name_id" in step)]
        if "ORDER BY tasks.id DESC" in statement and " WHERE " not in statement:
            continue  # the unfiltered list walks the primary key back and stops at the page
        assert not whole, (statement, plan)


def test_queue_depth_is_plain_numbers_on_every_database(session):
    """MySQL sums to a Decimal, which JSON (the CLI, the API) cannot carry."""
    add_tasks(session, 40)
    queued, due, oldest = stats.queue_depth(session, now=NOW + dt.timedelta(seconds=1))
    assert type(queued) is int and type(due) is int and due == queued > 0
    assert oldest <= NOW


def test_a_workflow_keeps_its_tasks_while_it_runs_and_goes_with_them_once_ended_as_long_ago(session):
    start_rollup_at(session, NOW - dt.timedelta(days=10))
    old = NOW - dt.timedelta(days=9)
    ids = {}
    for label in ("running", "ended recently", "ended long ago"):
        ids[label], started = enqueue(session, group(step.s(value=1), step.s(value=2)))
        session.execute(update(Task).where(Task.id.in_(started))
                        .values(status="succeeded", created_at=old, run_after=old, finished_at=old))
        session.execute(update(WorkflowNode).where(WorkflowNode.workflow_id == ids[label])
                        .values(status="succeeded"))
    session.execute(update(Workflow).where(Workflow.id == ids["ended recently"])
                    .values(status="succeeded", finished_at=NOW - dt.timedelta(days=1)))
    session.execute(update(Workflow).where(Workflow.id == ids["ended long ago"])
                    .values(status="succeeded", finished_at=old))
    session.commit()
    roll_all(session)

    def tasks_of(workflow_id):
        return session.scalar(select(func.count()).select_from(Task).join(
            WorkflowNode, WorkflowNode.id == Task.workflow_node).where(WorkflowNode.workflow_id == workflow_id))

    assert stats.prune_workflows(session, dt.timedelta(days=7), now=NOW) == 0  # its tasks are still there
    assert stats.prune_finished(session, dt.timedelta(days=7), now=NOW) == 2
    assert stats.prune_workflows(session, dt.timedelta(days=7), now=NOW) == 1
    session.commit()
    assert [tasks_of(ids[label]) for label in ids] == [2, 2, 0]
    assert session.scalars(select(Workflow.id).order_by(Workflow.id)).all() == [ids["running"], ids["ended recently"]]
    assert session.scalar(select(func.count()).select_from(WorkflowNode)
                          .where(WorkflowNode.workflow_id == ids["ended long ago"])) == 0
