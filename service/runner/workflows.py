"""Workflows run: submitted in the caller's transaction, each step settled in the commit that
ends the task it waits for.

When a task of a workflow ends, the same transaction moves its step (once: a
conditional UPDATE), and from there its parents: a chain starts its next step, a
group counts the member (the commit that counts the last one moves the group on),
a chord starts its callback. So a next step or callback is inserted exactly once,
by the commit that settles the last step it waits for, with no polling. A failed
step fails every composite above it (each one's on_error step starts, once) and
the workflow; its unfinished tasks are then cancelled in transactions of their own
(`sweep`: after the commit, and by every process's upkeep for one that died first).
"""
import logging

from sqlalchemy import event

from db import bulk, session_scope
from db import workflows as steps
from db.models import ACTIVE, CANCELLED, FAILED, FINISHED_STATES, SUCCEEDED
from db.session import session_factory
from service import metrics
from service.runner import canvas, task_rows
from service.runner.workflow_start import Starter, handed_on, result_of

log = logging.getLogger(__name__)

TO_SWEEP = "service.workflows_to_sweep"  # session.info: workflows this transaction failed or cancelled
TO_COUNT = "service.workflow_counts"  # session.info: (counter, labels) to count once the transaction commits


class NotRetryable(ValueError):
    """Only a failed or cancelled workflow whose tasks have all finished can be retried."""


def submit(session, root, cancel_on_failure=True):
    """Check a chain, group or chord and add it to the session's transaction (not committed);
    return (workflow id, ids of the tasks it starts with). Nothing is written if it is invalid."""
    planned = canvas.plan(root)
    task_rows.backlog.check(session, adding=planned.starting())
    workflow_id = steps.insert_workflow(session, cancel_on_failure)
    [root_id] = _insert(session, workflow_id, None, [(0, planned)])
    starter = Starter(session)
    starter.activate(steps.node(session, root_id))
    count_on_commit(session, metrics.WORKFLOWS_STARTED, "submitted")
    return workflow_id, starter.flush()


def retry(session, workflow_id):
    """Run a failed or cancelled workflow again from where it stopped (not committed): every step
    that did not succeed runs again, with what the steps before it returned. Return the ids of
    the tasks it starts, or None if there is no such workflow; raises NotRetryable."""
    status = steps.status(session, workflow_id)
    if status is None:
        return None
    if status not in (FAILED, CANCELLED):
        raise NotRetryable(f"workflow {workflow_id} is {status}; only a failed or cancelled one can be retried")
    unfinished = steps.unfinished_tasks(session, workflow_id)
    if unfinished:
        shown = ", ".join(map(str, unfinished[:5])) + (", ..." if len(unfinished) > 5 else "")
        raise NotRetryable(f"workflow {workflow_id} still has {len(unfinished)} unfinished task(s) ({shown}); "
                           "retry it once they have stopped")
    task_rows.backlog.check(session)
    if not steps.restart(session, workflow_id):  # another request retried it meanwhile
        raise NotRetryable(f"workflow {workflow_id} was retried already")
    steps.reopen(session, workflow_id)
    starter = Starter(session)
    starter.activate(steps.root(session, workflow_id))
    count_on_commit(session, metrics.WORKFLOWS_STARTED, "retried")
    return starter.flush()


def count_on_commit(session, counter, *labels):
    """Count in counter once this transaction commits (a rolled-back one counts nothing)."""
    session.info.setdefault(TO_COUNT, []).append((counter, labels))


def _insert(session, workflow_id, parent_id, placed):
    """Insert planned steps (position, Planned) under parent_id, then theirs; return their ids."""
    ids = steps.insert_nodes(session, workflow_id, parent_id,
                             [(position, each.kind, each.spec) for position, each in placed])
    for node_id, (_, each) in zip(ids, placed):
        below = list(enumerate(each.steps))
        if each.on_error is not None:
            below.append((steps.ON_ERROR, each.on_error))
        if below:
            _insert(session, workflow_id, node_id, below)
    return ids


def retried_with(session, task):
    """The workflow whose retry reruns this task (a step's, not an error callback's), or None."""
    if task.workflow_node is None:
        return None
    node = steps.node(session, task.workflow_node)
    return node.workflow_id if node is not None and node.position != steps.ON_ERROR else None


def task_ended(session, node_id, task_id, ending=None, step=None):
    """In the transaction that ended task_id, settle the step it ran and what that moves.
    ending: the task's (status, error, name) if the caller knows them (else they are read);
    step: (the step, its parent) as its claim read them (else they are read). What a step
    and its parent are does not change while its task runs; their status is checked by
    the guarded writes."""
    node, parent = step or steps.node_and_parent(session, node_id)
    if node is None:
        return
    status, error, name = ending or steps.task_ending(session, task_id)
    if status not in FINISHED_STATES or not steps.end_task_step(session, node.id, task_id, status):
        return
    starter = Starter(session)
    _settled(session, starter, node, status, {"task_id": task_id, "name": name, "error": error}, parent)
    starter.flush()


def tasks_ended(session, task_ids):
    """task_ended for those of task_ids that ran workflow steps (cancels, lost leases)."""
    for node in steps.active_nodes_of_tasks(session, task_ids):
        task_ended(session, node.id, node.task_id)


def _settled(session, starter, node, status, failure, parent=None):
    """A step has ended with status: move its parent on (parent: read already, or None)."""
    if node.position == steps.ON_ERROR:
        return  # an error callback's end settles nothing
    if node.parent_id is None:
        if steps.finish(session, node.workflow_id, status,
                        failed_task=failure["task_id"] if status == FAILED else None,
                        error=failure["error"] if status == FAILED else None):
            count_on_commit(session, metrics.WORKFLOWS_FINISHED, status)
            if status != SUCCEEDED:
                session.info.setdefault(TO_SWEEP, set()).add(node.workflow_id)
        return
    parent = parent or steps.node(session, node.parent_id)
    if status != SUCCEEDED:
        if steps.move(session, parent.id, ACTIVE, status):
            if status == FAILED:
                on_error = steps.step_at(session, parent.id, steps.ON_ERROR)
                if on_error is not None:
                    starter.activate(on_error, failure=failure)
            _settled(session, starter, parent, status, failure)
        return
    if parent.kind == "group":
        if steps.member_done(session, parent, node.position) == 0 and steps.move(session, parent.id, ACTIVE, SUCCEEDED):
            _settled(session, starter, parent, SUCCEEDED, None)
        return
    following = steps.step_at(session, parent.id, node.position + 1)
    if following is None:
        if steps.move(session, parent.id, ACTIVE, SUCCEEDED):
            _settled(session, starter, parent, SUCCEEDED, None)
        return
    if not starter.running(node.workflow_id):  # it failed or was cancelled: the rest of this composite never runs
        if steps.move(session, parent.id, ACTIVE, CANCELLED):
            _settled(session, starter, parent, CANCELLED, None)
        return
    starter.activate(following, results=handed_on(parent.kind, result_of(session, node)))


def cancel(session, workflow_id):
    """Cancel a running workflow (not committed): its unfinished tasks are cancelled after the
    commit. Returns False if it was not running."""
    if not steps.finish(session, workflow_id, CANCELLED):
        return False
    count_on_commit(session, metrics.WORKFLOWS_FINISHED, CANCELLED)
    session.info.setdefault(TO_SWEEP, set()).add(workflow_id)
    return True


def sweep(workflow_id, passes=5):
    """Cancel a failed or cancelled workflow's unfinished tasks, in transactions of their own.

    Rows another transaction holds are skipped, not waited for (that one is ending or
    starting the task; waiting could deadlock with it) and taken on the next pass; the
    workflow counts as swept once a pass found none left.
    """
    for _ in range(passes):
        with session_scope() as session:
            ids = steps.unfinished_task_ids(session, workflow_id) if steps.cancels_members(session, workflow_id) else []
            free = steps.lock_uncancelled(session, ids)
            done, _ = bulk.cancel_ids(session, free)
            session.commit()
            for name, n in done.items():
                metrics.CANCELLED.labels(name).inc(n)
            tasks_ended(session, free)
            session.commit()
            if not steps.uncancelled(session, ids):
                steps.mark_swept(session, workflow_id)
                return True
    return False


def sweep_unswept():
    """Sweep the failed or cancelled workflows whose sweep never ran or finished (upkeep)."""
    with session_scope() as session:
        pending = steps.unswept(session)
    for workflow_id in pending:
        sweep(workflow_id)


@event.listens_for(session_factory, "after_commit")
def _committed(session):
    if session.in_nested_transaction():
        return
    for counter, labels in session.info.pop(TO_COUNT, ()):
        (counter.labels(*labels) if labels else counter).inc()
    for workflow_id in sorted(session.info.pop(TO_SWEEP, ())):
        try:
            sweep(workflow_id)
        except Exception:  # upkeep sweeps it again
            log.exception("workflow %s: could not cancel its unfinished tasks yet", workflow_id)


@event.listens_for(session_factory, "after_transaction_end")
def _ended(session, transaction):
    if transaction.parent is None:
        session.info.pop(TO_SWEEP, None)
        session.info.pop(TO_COUNT, None)
