"""Concurrency limits: never more than `concurrency` tasks of one key running, across threads and processes."""
import datetime as dt
import signal
import time

import pytest
from sqlalchemy import event, insert, select, update

import db
from db import claims, attempt_writes, limits, tasks
from db.claimer import Claimer
from db.models import RunnerRecord, Task, TaskLimit, User, utcnow
from service.runner import rollup_and_prune, submit
from service.runner.registry import TaskRegistry
from tests.conftest import FAST, count_rows, wait_finished, wait_for
from tests.sample_tasks import Slot
from tests.server import Worker


def slot_marks(session):
    """{"task id.attempt": {"start": t, "end": t}} from the marks limited tasks write."""
    marks = {}
    for name in session.scalars(select(User.name).where(User.name.like("slot %"))):
        _, attempt, edge, when = name.split()
        marks.setdefault(attempt, {})[edge] = float(when)
    return marks


def peak(marks, cut_at=float("inf")):
    """The most tasks that were between their start and end marks at once (no end: cut_at)."""
    events = sorted([(times["start"], 1) for times in marks.values()]
                    + [(times.get("end", cut_at), -1) for times in marks.values()])
    running = highest = 0
    for _, step in events:  # at equal times an end (-1) sorts first
        running += step
        highest = max(highest, running)
    return highest


def enqueue(session, name, count, **args):
    ids = [submit.enqueue(session, name, args).id for _ in range(count)]
    session.commit()
    return ids


@pytest.mark.parametrize("options, message", [
    ({"concurrency": 0}, "whole number from 1"),
    ({"concurrency": 10_001}, "whole number from 1"),
    ({"concurrency": 1.5}, "whole number from 1"),
    ({"concurrency": True}, "whole number from 1"),
    ({"concurrency_key": "customer"}, "needs a concurrency"),
    ({"concurrency": 2, "concurrency_key": "nope"}, "'nope' is not one of its arguments"),
])
def test_a_bad_limit_is_refused_where_the_task_is_declared(options, message):
    with pytest.raises(ValueError, match=message):
        TaskRegistry().task("t", schema=Slot, **options)


def test_a_limited_task_carries_its_key_per_task_or_per_argument_value(session):
    whole = submit.enqueue(session, "limited", {})
    acme = submit.enqueue(session, "per_customer", {"customer": "acme"})
    long = submit.enqueue(session, "per_customer", {"customer": "x" * 300})
    plain = submit.enqueue(session, "noop", {})
    session.commit()
    assert (whole.limit_key, whole.concurrency) == ("limited", 2)
    assert (acme.limit_key, acme.concurrency) == ('per_customer:"acme"', 1)
    assert long.limit_key.startswith("per_customer#") and len(long.limit_key) <= 200
    assert (plain.limit_key, plain.concurrency) == (None, None)


def test_claims_stop_at_the_limit_and_take_the_next_when_one_finishes(session):
    ids = enqueue(session, "limited", 5)
    first = claims.claim_due(session, "a", 8)
    session.commit()
    assert [claim.id for claim in first] == ids[:2]
    assert claims.claim_due(session, "b", 8) == []  # both slots are held while reserved
    session.commit()
    assert attempt_writes.start_task(session, first[0], "a") == attempt_writes.STARTED
    assert attempt_writes.finish_task(session, first[0], "a", "succeeded")
    session.commit()
    assert [claim.id for claim in claims.claim_due(session, "b", 8)] == ids[2:3]
    session.commit()
    assert count_rows(Task, Task.status == "reserved") == 2


@pytest.mark.parametrize("one, other", [("acme", "bolt"), ("Ann", "ann")])  # case counts, on MySQL too
def test_each_value_of_the_key_argument_has_its_own_limit(session, one, other):
    first = enqueue(session, "per_customer", 3, customer=one)
    second = enqueue(session, "per_customer", 3, customer=other)
    claimed = claims.claim_due(session, "a", 8)
    session.commit()
    assert sorted(claim.id for claim in claimed) == [first[0], second[0]]


def test_a_limited_task_of_higher_priority_goes_first_and_what_does_not_fit_waits_unchanged(session):
    low = enqueue(session, "noop", 3)
    high = [submit.enqueue(session, "limited", {}, priority=5).id for _ in range(3)]
    session.commit()
    claimed = claims.claim_due(session, "a", 3)
    session.commit()
    assert [claim.id for claim in claimed] == [high[0], high[1], low[0]]
    waiting = session.execute(select(Task.id, Task.status, Task.owner, Task.attempts)
                              .where(Task.id.in_([high[2], *low[1:]])).order_by(Task.id)).all()
    assert [tuple(row[1:]) for row in waiting] == [("queued", None, 0)] * 3


def test_plain_claims_and_deliveries_never_take_a_limited_task(session):
    ids = enqueue(session, "limited", 3)
    assert claims.claim_unlimited(session, "a", 8) == []
    session.commit()
    assert [claim.id for claim in claims.claim_delivered(session, ids, "b")] == ids[:2]
    session.commit()
    assert claims.claim_delivered(session, ids[2:], "c") == []  # full: waits, to be published again
    session.commit()
    assert session.scalar(select(Task.published_at).where(Task.id == ids[2])) is None


def test_the_relay_does_not_publish_a_key_that_is_full(session):
    from db import publishing

    ids = enqueue(session, "limited", 3)
    claims.claim_due(session, "a", 8)
    session.commit()
    assert publishing.take_unpublished(session, 10, None, grace=0) == []
    session.commit()
    session.execute(update(Task).where(Task.id == ids[0]).values(status="succeeded"))
    session.commit()
    assert publishing.take_unpublished(session, 10, None, grace=0) == [(ids[2], "default")]


def test_the_relay_publishes_no_more_of_a_key_than_its_free_slots(session):
    from db import publishing

    ids = enqueue(session, "limited", 5)
    assert publishing.take_unpublished(session, 10, None, grace=0) == [(ids[0], "default"), (ids[1], "default")]
    session.commit()
    assert publishing.take_unpublished(session, 10, None, grace=0) == []  # both slots spoken for
    session.commit()
    [claim] = claims.claim_delivered(session, [ids[0]], "w")
    session.commit()
    assert attempt_writes.start_task(session, claim, "w") == attempt_writes.STARTED
    assert attempt_writes.finish_task(session, claim, "w", "succeeded")
    session.commit()
    assert publishing.take_unpublished(session, 10, None, grace=0) == [(ids[2], "default")]


def test_a_slot_held_past_its_lease_frees_when_the_task_is_requeued(session):
    ids = enqueue(session, "limited", 3)
    for claim in claims.claim_due(session, "dead", 8):
        assert attempt_writes.start_task(session, claim, "dead") == attempt_writes.STARTED
    session.commit()
    session.execute(update(Task).where(Task.status == "running")
                    .values(heartbeat_at=utcnow() - dt.timedelta(seconds=60)))
    session.commit()
    assert claims.claim_due(session, "alive", 8) == []  # still counted while its row runs
    session.commit()
    assert attempt_writes.recover_expired(session, 30) == (2, 0)
    session.commit()
    # Both slots free again: the one that waited (due first), then a requeued one (due now).
    assert [claim.id for claim in claims.claim_due(session, "alive", 8)] == [ids[2], ids[0]]


def test_a_slot_reserved_past_its_lease_frees_and_the_task_keeps_its_place(session):
    ids = enqueue(session, "limited", 3)
    claims.claim_due(session, "dead", 8)  # reserved, never started
    session.commit()
    session.execute(update(Task).where(Task.status == "reserved")
                    .values(heartbeat_at=utcnow() - dt.timedelta(seconds=60)))
    session.commit()
    assert claims.claim_due(session, "alive", 8) == []  # a reserved row holds its slot
    session.commit()
    assert attempt_writes.recover_expired(session, 30) == (2, 0)
    session.commit()
    rows = session.scalars(select(Task).where(Task.id.in_(ids[:2]))).all()
    assert {(row.status, row.attempts, row.owner) for row in rows} == {("queued", 0, None)}
    assert [claim.id for claim in claims.claim_due(session, "alive", 8)] == ids[:2]
    session.commit()


def test_four_worker_threads_run_a_limit_of_two_two_at_a_time(make_runner, session):
    ids = enqueue(session, "limited", 12, seconds=0.05)
    make_runner(workers=4)
    rows = wait_finished(ids)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert peak(slot_marks(session)) == 2


def test_three_processes_run_40_limited_tasks_never_more_than_two_at_once(shared_db, tmp_path,
                                                                           processes):
    # One task at a time per process (no prefetch): two at once takes two processes, and
    # the third, which could make it three, must wait for the global limit.
    for n in range(3):
        processes.append(Worker(shared_db, tmp_path / f"w{n}.log", TASK_WORKERS=1, TASK_PREFETCH=0,
                                TASK_MODULES="tests.sample_tasks", **FAST).start())
    wait_for(lambda: count_rows(RunnerRecord) == 3, message="three runners polling")
    with db.session_scope() as session:
        ids = [submit.enqueue(session, "limited", {"seconds": 0.1}).id for _ in range(40)]
    rows = wait_finished(ids, timeout=90)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}
    assert len({row.owner for row in rows.values()}) >= 2
    with db.session_scope() as session:
        marks = slot_marks(session)
    assert len(marks) == 40 and all(len(times) == 2 for times in marks.values())
    assert peak(marks) == 2


def test_a_slot_held_by_a_killed_process_frees_after_its_lease(shared_db, tmp_path, processes):
    url = shared_db
    first = Worker(url, tmp_path / "a.log", TASK_WORKERS=4, TASK_MODULES="tests.sample_tasks",
                   **FAST).start()
    processes.append(first)
    with db.session_scope() as session:
        held = [submit.enqueue(session, "limited", {"seconds": 2}).id for _ in range(2)]
        waiting = submit.enqueue(session, "limited", {"seconds": 0}).id
    def both_started():
        with db.session_scope() as session:
            return {f"{task_id}.1" for task_id in held} <= set(slot_marks(session))

    wait_for(both_started, message="both slots held")
    first.signal(signal.SIGKILL)
    killed_at = time.time()
    first.wait(10)
    second = Worker(url, tmp_path / "b.log", TASK_WORKERS=4, TASK_MODULES="tests.sample_tasks",
                    **FAST).start()
    processes.append(second)
    rows = wait_finished([*held, waiting], timeout=60)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert sorted(rows[task_id].attempts for task_id in held) == [2, 2]  # requeued by the lease
    assert rows[waiting].attempts == 1
    with db.session_scope() as session:
        marks = slot_marks(session)
    # The waiting task started only when the dead process's lease (2 s, heartbeats every
    # 0.5 s) had run out: until then its two tasks still held both slots.
    assert marks[f"{waiting}.1"]["start"] > killed_at + 1.0
    assert [f"{task_id}.1" in marks and "end" not in marks[f"{task_id}.1"] for task_id in held] == [True, True]
    finished = {attempt: times for attempt, times in marks.items() if "end" in times}
    assert len(finished) == 3 and peak(finished) <= 2


def test_a_process_that_declares_no_limit_still_claims_limited_rows_that_wait(session):
    ids = enqueue(session, "limited", 3)  # queued under a declaration this process has not
    claimer = Claimer(lambda: False)
    assert [claim.id for claim in claimer.claim(session, "a", 8)] == ids[:2]
    session.commit()
    assert claimer.claim(session, "a", 8) == []  # the limit still holds
    session.commit()


def test_a_claimer_groups_the_waiting_keys_again_only_when_they_are_old_or_work_was_queued(database, session):
    """Grouping every waiting row at each limited step cost more than the rest of the step."""
    grouped = []

    def count(conn, cursor, statement, *_):
        if "GROUP BY tasks.limit_key, tasks.rate_key" in statement:
            grouped.append(statement)
    event.listen(database, "before_cursor_execute", count)
    try:
        claimer = Claimer(lambda: True, pause=0, keys_for=60)  # no pause after a claim that found every key full
        first = enqueue(session, "per_customer", 2, customer="a")
        assert [claim.id for claim in claimer.claim(session, "w", 8)] == first[:1]
        session.commit()
        late = enqueue(session, "per_customer", 1, customer="b")  # a key the kept read does not hold
        assert claimer.claim(session, "w", 8) == []  # a's one slot is held; b's key is not known yet
        session.commit()
        assert len(grouped) == 1
        claimer.new_work()  # as a submit in this process tells it
        assert [claim.id for claim in claimer.claim(session, "w", 8)] == late
        session.commit()
        assert len(grouped) == 2
        fresh = Claimer(lambda: True, pause=0, keys_for=0.0)  # read each time
        fresh.claim(session, "v", 8)
        fresh.claim(session, "v", 8)
        session.commit()
        assert len(grouped) == 4
    finally:
        event.remove(database, "before_cursor_execute", count)


def test_a_claimer_asks_to_be_woken_for_a_rate_opening_only_before_it(session):
    """Once the opening had passed it answered 0: a dispatcher with every slot taken looped
    without waiting (20,000 times in 10 s), slowing every task in the process."""
    enqueue(session, "rated", 11)  # 10 a second
    claimer = Claimer(lambda: True, pause=0)
    taken = claimer.claim(session, "w", 20)
    for claim in taken:
        assert attempt_writes.start_task(session, claim, "w") == attempt_writes.STARTED
    session.commit()
    assert len(taken) == 10
    assert claimer.claim(session, "w", 20) == []  # full: the first start stops counting in 1 s
    session.commit()
    assert 0 < claimer.room_in() <= 1.0
    wait_for(lambda: claimer.room_in() == float("inf"), timeout=5,
             message="the passed opening to stop asking for a wake-up")


def test_when_waiting_tasks_disagree_on_the_limit_the_lowest_holds(session):
    ids = [tasks.insert_task(session, "noop", {}, limit_key="k", concurrency=n).id for n in (5, 5, 2, 5)]
    session.commit()
    assert [claim.id for claim in claims.claim_due(session, "a", 8)] == ids[:2]
    session.commit()


def limit_keys():
    with db.session_scope() as s:
        return sorted(s.scalars(select(TaskLimit.limit_key)))


def test_idle_limit_keys_are_forgotten_a_batch_at_a_time_and_keys_in_use_stay(session):
    week_ago = utcnow() - dt.timedelta(days=8)
    session.execute(insert(TaskLimit), [{"limit_key": key, "created_at": week_ago}
                                        for key in ("a-idle", "b-queued", "c-running", "d-done", "e-idle")]
                    + [{"limit_key": "f-new", "created_at": utcnow()}])
    for key in ("b-queued", "c-running", "d-done"):
        tasks.insert_task(session, "noop", {}, limit_key=key, concurrency=1)
    session.execute(update(Task).where(Task.limit_key == "c-running").values(status="running"))
    session.execute(update(Task).where(Task.limit_key == "d-done").values(status="succeeded"))
    session.commit()
    seen, after = [], None
    while True:
        gone, after = limits.forget_idle_keys(session, after, dt.timedelta(days=7), batch=2)
        session.commit()
        seen.append((gone, after))
        if after is None:
            break
    assert seen == [(1, "b-queued"), (1, "d-done"), (1, "f-new"), (0, None)]
    assert limit_keys() == ["b-queued", "c-running", "f-new"]


def test_a_claim_makes_a_forgotten_key_again_and_its_limit_still_holds(session):
    ids = enqueue(session, "limited", 3)
    assert len(claims.claim_due(session, "a", 8)) == 2
    session.execute(update(Task).where(Task.id.in_(ids)).values(status="succeeded", owner=None))
    session.execute(update(TaskLimit).values(created_at=utcnow() - dt.timedelta(days=8)))
    session.commit()
    assert limits.forget_idle_keys(session, None, dt.timedelta(days=7)) == (1, None)
    session.commit()
    assert limit_keys() == []
    more = enqueue(session, "limited", 3)
    assert [claim.id for claim in claims.claim_due(session, "b", 8)] == more[:2]
    session.commit()
    assert limit_keys() == ["limited"]


def test_each_heartbeat_looks_at_the_next_batch_of_limit_keys(session, monkeypatch):
    monkeypatch.setattr(rollup_and_prune, "PRUNE_BATCH", 2)
    week_ago = utcnow() - dt.timedelta(days=8)
    session.execute(insert(TaskLimit), [{"limit_key": f"k{n}", "created_at": week_ago} for n in range(5)])
    session.commit()
    keeper = rollup_and_prune.RollupAndPrune()
    keeper.keep(retention=0)  # 0 keeps everything
    left = [limit_keys()]
    for _ in range(3):
        keeper.keep(retention=7 * 86400)
        left.append(limit_keys())
    assert left == [[f"k{n}" for n in range(5)], ["k2", "k3", "k4"], ["k4"], []]
