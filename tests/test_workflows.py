"""Workflows: chains, groups and chords, each next step inserted once, by the commit that
settles the last step it waits for."""
import signal
import threading
import time

import pytest
from sqlalchemy import event, func, select, update

import db
from db import attempt_writes, claims, workflow_views
from db.session import session_factory
from db.models import CANCELLED, FAILED, SUCCEEDED, Task, Workflow, WorkflowNode
from service.runner import InvalidWorkflow, chain, chord, enqueue, group
from service.runner import outcomes, workflows
from tests.conftest import FAST, count_rows, wait_for
from tests.sample_tasks import report_failure, step
from tests.server import Worker


def submit(root, **options):
    with db.session_scope() as session:
        return enqueue(session, root, **options)


def workflow_row(workflow_id):
    with db.session_scope() as session:
        return session.get(Workflow, workflow_id)


def wait_workflow(workflow_id, timeout=60):
    """Wait until the workflow and every task it inserted have finished; return its tasks by id."""
    def done():
        with db.session_scope() as session:
            status = session.scalar(select(Workflow.status).where(Workflow.id == workflow_id))
            rows = session.scalars(select(Task).join(WorkflowNode, WorkflowNode.id == Task.workflow_node)
                                   .where(WorkflowNode.workflow_id == workflow_id)).all()
        if status != "running" and all(row.finished for row in rows):
            return {row.id: row for row in rows}
        return None

    return wait_for(done, timeout=timeout, message=f"workflow {workflow_id} to end")


def by_name_and_value(rows):
    return {(row.name, row.args.get("value")): row for row in rows.values()}


def test_a_chain_hands_each_result_to_the_next_step_which_starts_after_it(runner):
    workflow_id, started = submit(chain(step.s(value=1), step.s(value=10), step.s(value=100)))
    assert len(started) == 1  # the later steps do not exist yet
    rows = wait_workflow(workflow_id)
    assert workflow_row(workflow_id).status == SUCCEEDED
    ordered = sorted(rows.values(), key=lambda row: row.id)
    assert [row.result for row in ordered] == [1, 11, 111]
    assert [row.args.get("results") for row in ordered] == [None, [1], [11]]
    for before, after in zip(ordered, ordered[1:]):
        assert after.created_at >= before.finished_at


def test_a_chord_callback_gets_its_members_results_in_order_once_after_the_last(runner):
    members = [step.s(value=n, seconds=0.01 * (n % 3)) for n in range(20)]
    workflow_id, started = submit(chord(members, step.s(value=1000)))
    assert len(started) == 20
    rows = wait_workflow(workflow_id)
    callbacks = [row for row in rows.values() if row.args["value"] == 1000]
    assert len(callbacks) == 1 and len(rows) == 21
    assert callbacks[0].args["results"] == list(range(20))
    assert callbacks[0].result == 1000 + sum(range(20))
    assert callbacks[0].created_at >= max(row.finished_at for row in rows.values() if row is not callbacks[0])
    assert workflow_row(workflow_id).status == SUCCEEDED


def test_a_chain_of_chords_and_a_group_inside_a_chain_nest(runner):
    root = chain(chord(group(step.s(value=1), step.s(value=2)), step.s(value=10)),
                 group(step.s(value=100), chain(step.s(value=1000), step.s(value=5000))),
                 step.s(value=0))
    workflow_id, _ = submit(root)
    rows = by_name_and_value(wait_workflow(workflow_id))
    assert rows["step", 10].result == 13  # chord callback: [1, 2]
    assert rows["step", 100].args["results"] == [13]  # each member of a chain's group gets [previous]
    assert rows["step", 1000].args["results"] == [13]
    assert rows["step", 5000].result == 5000 + 1013
    assert rows["step", 0].args["results"] == [[113, 6013]]  # a chain step gets [the group's results]
    assert rows["step", 0].result == 113 + 6013
    assert workflow_row(workflow_id).status == SUCCEEDED


def test_a_failed_member_fails_the_workflow_runs_on_error_once_and_cancels_the_rest(runner):
    members = [step.s(value=1), step.s(value=2, fail=True), step.s(value=3, seconds=30)]
    workflow_id, _ = submit(chord(members, step.s(value=1000), on_error=report_failure.s()))
    rows = wait_workflow(workflow_id)
    failed = by_name_and_value(rows)["step", 2]
    workflow = workflow_row(workflow_id)
    assert (workflow.status, workflow.failed_task) == (FAILED, failed.id)
    assert workflow.error == failed.error == "ValueError: step 2 failed"
    reports = [row for row in rows.values() if row.name == "report_failure"]
    assert len(reports) == 1, reports
    assert reports[0].args == {"failure": {"task_id": failed.id, "name": "step", "error": "ValueError: step 2 failed"}}
    assert reports[0].result == {"task_id": failed.id, "name": "step", "error": "ValueError: step 2 failed"}
    assert by_name_and_value(rows)["step", 3].status == CANCELLED
    assert ("step", 1000) not in by_name_and_value(rows)  # the callback never started
    wait_for(lambda: workflow_row(workflow_id).swept, message="the workflow swept")


def test_with_cancel_on_failure_off_the_other_members_finish(runner):
    members = [step.s(value=2, fail=True), step.s(value=3, seconds=0.3)]
    workflow_id, _ = submit(group(members), cancel_on_failure=False)
    rows = by_name_and_value(wait_workflow(workflow_id))
    assert rows["step", 3].status == SUCCEEDED
    assert workflow_row(workflow_id).status == FAILED


def test_cancelling_a_workflow_cancels_every_unfinished_member(runner):
    workflow_id, started = submit(chain(group(step.s(value=n, seconds=30) for n in range(6)), step.s(value=9)))
    wait_for(lambda: count_rows(Task, Task.id.in_(started), Task.status == "running") >= 1,
             message="a member running")
    with db.session_scope() as session:
        assert workflows.cancel(session, workflow_id)
    rows = wait_workflow(workflow_id)
    assert {row.status for row in rows.values()} == {CANCELLED}
    assert len(rows) == 6  # the chain's second step never started
    assert workflow_row(workflow_id).status == CANCELLED
    with db.session_scope() as session:
        assert not workflows.cancel(session, workflow_id)  # once


def test_a_rolled_back_submit_leaves_no_row(database):
    with session_factory() as session:
        enqueue(session, chord([step.s(value=1)], step.s()))
        session.rollback()
    assert (count_rows(Workflow), count_rows(WorkflowNode), count_rows(Task)) == (0, 0, 0)


def test_a_workflow_is_refused_past_the_configured_backlog_bound_with_nothing_written(database):
    from service.runner import QueueFull
    from service.runner import submit as submitting

    submitting.configure(5)  # as TASK_MAX_QUEUED=5 does at start-up
    with pytest.raises(QueueFull):  # it would start six tasks at once
        submit(group(step.s(value=n) for n in range(6)))
    submit(group(step.s(value=n) for n in range(5)))  # five fit
    with pytest.raises(QueueFull):  # the queue is full now
        submit(chain(step.s(value=1), step.s(value=2)))
    assert count_rows(Task) == 5 and count_rows(Workflow) == 1


@pytest.mark.parametrize("root, path", [
    (chord([step.s(value=1), step.s(value="x")], step.s()), "chord.group[1]"),
    (chain(step.s(), group()), "chain[1]"),
    (group(step.s(), chain(step.s(), step.s().set(priority=500))), "group[1][1]"),
    (chain(step.s(), on_error=chain(step.s())), "chain.on_error"),
])
def test_a_bad_step_is_named_and_nothing_is_written(database, root, path):
    with pytest.raises(InvalidWorkflow) as raised:
        submit(root)
    assert raised.value.path == path
    assert (count_rows(Workflow), count_rows(WorkflowNode), count_rows(Task)) == (0, 0, 0)


def test_fifty_members_finishing_at_once_insert_the_callback_exactly_once(database):
    workflow_id, started = submit(chord([step.s(value=n) for n in range(50)], step.s(value=1000)))
    with db.session_scope() as session:
        taken = claims.claim_due(session, "finisher", 50)
        for claim in taken:
            assert attempt_writes.start_task(session, claim, "finisher") == attempt_writes.STARTED
    assert sorted(claim.id for claim in taken) == sorted(started)
    barrier = threading.Barrier(len(taken))
    errors = []

    def finish(claim):
        try:
            barrier.wait()
            with db.session_scope() as session:
                assert outcomes.finish(session, claim, "finisher", SUCCEEDED, result=claim.args["value"])
        except Exception as error:  # noqa: BLE001  reported below
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(claim,)) for claim in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with db.session_scope() as session:
        callbacks = session.scalars(select(Task).where(Task.id.not_in(started))).all()
        pending = session.scalar(select(func.max(WorkflowNode.pending)).where(WorkflowNode.kind == "group"))
    assert len(callbacks) == 1
    assert callbacks[0].args["results"] == list(range(50))
    assert pending == 0


@pytest.mark.slow
def test_a_1000_member_chord_calls_back_once_while_workers_are_killed(shared_db, tmp_path, processes):
    def start(n):
        return Worker(shared_db, tmp_path / f"w{n}.log", TASK_WORKERS=4, TASK_MODULES="tests.sample_tasks",
                      **FAST).start()

    alive = [start(0), start(1)]
    processes.extend(alive)
    members = [step.s(value=n, seconds=0.03).set(max_attempts=10) for n in range(1000)]  # long enough for kills
    workflow_id, _ = submit(chord(members, step.s(value=-1).set(max_attempts=10)))
    kills = 0
    deadline = time.monotonic() + 240
    while workflow_row(workflow_id).status == "running" and time.monotonic() < deadline:
        time.sleep(2)  # a worker dies every 2 s, mid-task, and another takes its place
        doomed = alive.pop(0)
        doomed.signal(signal.SIGKILL)
        doomed.wait(10)
        kills += 1
        alive.append(start(kills + 1))
        processes.append(alive[-1])
    rows = wait_workflow(workflow_id, timeout=120)
    assert workflow_row(workflow_id).status == SUCCEEDED
    assert kills >= 2
    with db.session_scope() as session:
        per_step = session.execute(select(Task.workflow_node, func.count()).group_by(Task.workflow_node)).all()
    assert len(per_step) == 1001 and {n for _, n in per_step} == {1}  # one task per step, ever
    [callback] = [row for row in rows.values() if row.args["value"] == -1]
    assert callback.args["results"] == list(range(1000))
    assert callback.created_at >= max(row.finished_at for row in rows.values() if row is not callback)
    assert {row.status for row in rows.values()} == {SUCCEEDED}
    print(f"{kills} kills; {sum(row.attempts > 1 for row in rows.values())} steps ran again")


def test_a_workflow_read_shows_its_steps_and_their_tasks_as_of_one_moment(database):
    workflow_id, [task_id] = submit(chain(step.s(value=1), step.s(value=2)))
    ended = []

    def end_the_task_meanwhile(conn, cursor, statement, parameters, context, executemany):
        # Once the read has seen the steps, another transaction ends the task and settles its
        # step together, as a worker's finish does.
        if "workflow_nodes" in statement and not ended:
            ended.append(True)
            with db.get_engine().begin() as other:
                other.execute(update(Task).where(Task.id == task_id).values(status=CANCELLED))
                other.execute(update(WorkflowNode).where(WorkflowNode.task_id == task_id).values(status=CANCELLED))

    event.listen(db.get_engine(), "after_cursor_execute", end_the_task_meanwhile)
    try:
        with db.session_scope() as session:
            found = workflow_views.get_workflow(session, workflow_id)
    finally:
        event.remove(db.get_engine(), "after_cursor_execute", end_the_task_meanwhile)
    first = found["tree"]["steps"][0]
    assert ended and (first["status"], first["task"]["status"]) in {("active", "queued"), ("cancelled", "cancelled")}
