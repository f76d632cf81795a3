"""Data functions for workflows: their tree of steps, and the guarded writes that move it.

Every move is a conditional UPDATE that one transaction alone can make: a step goes
waiting -> active once and active -> finished once, and a group's pending count moves
once per member under the group row's lock. So each next step is inserted exactly once,
by the commit that settles the last step it waits for. Each function takes a session
and never ends its transaction.
"""
import typing

from sqlalchemy import bindparam, delete, exists, or_, select, update

from db.dialects import dialect_of
from db.models import (ACTIVE, CANCELLED, FAILED, RUNNING, SUCCEEDED, UNFINISHED_STATES, WAITING, Task,
                       Workflow, WorkflowCounter, WorkflowNode, utcnow)

_nodes = WorkflowNode.__table__


class Node(typing.NamedTuple):
    """A step as read: plain values, no ORM object."""

    id: int
    workflow_id: int
    parent_id: int | None
    position: int
    kind: str
    spec: dict | None
    status: str
    task_id: int | None
    shards: int | None


_NODE_COLUMNS = (WorkflowNode.id, WorkflowNode.workflow_id, WorkflowNode.parent_id, WorkflowNode.position,
                 WorkflowNode.kind, WorkflowNode.spec, WorkflowNode.status, WorkflowNode.task_id,
                 WorkflowNode.shards)
ON_ERROR = -1  # the position of a composite's on_error step
SHARDS = 16  # a group's counter rows: members ending together mostly lock different ones
_parent = WorkflowNode.__table__.alias("parent")


def insert_workflow(session, cancel_on_failure=True):
    """Add a running workflow; return its id."""
    workflow = Workflow(status=RUNNING, cancel_on_failure=cancel_on_failure, swept=False, created_at=utcnow())
    session.add(workflow)
    session.flush()
    return workflow.id


def insert_nodes(session, workflow_id, parent_id, steps):
    """Add waiting steps under parent_id; steps: (position, kind, spec) in order. Return their ids."""
    rows = [dict(workflow_id=workflow_id, parent_id=parent_id, position=position, kind=kind, spec=spec,
                 status=WAITING, pending=0, task_id=None) for position, kind, spec in steps]
    return dialect_of(session).insert_returning_ids(session.connection(), _nodes, rows)


def node(session, node_id):
    """The step with this id, or None."""
    row = session.execute(select(*_NODE_COLUMNS).where(WorkflowNode.id == node_id)).one_or_none()
    return Node(*row) if row else None


def root(session, workflow_id):
    """The workflow's outermost step."""
    row = session.execute(select(*_NODE_COLUMNS).where(WorkflowNode.workflow_id == workflow_id,
                                                       WorkflowNode.parent_id.is_(None))).one()
    return Node(*row)


# The statements every ending member runs are built once, and run on the session's connection
# past the ORM's execute pipeline: building them per call cost more than running them.
_n = _nodes.c
_counters = WorkflowCounter.__table__.c
_NODE_AND_PARENT = (select(*(_n[column.key] for column in _NODE_COLUMNS),
                           *(_parent.c[column.key] for column in _NODE_COLUMNS))
                    .outerjoin(_parent, _parent.c.id == _n.parent_id).where(_n.id == bindparam("node_id")))
_STEPS_AND_PARENTS = (select(*(_n[column.key] for column in _NODE_COLUMNS),
                             *(_parent.c[column.key] for column in _NODE_COLUMNS))
                      .outerjoin(_parent, _parent.c.id == _n.parent_id)
                      .where(_n.id.in_(bindparam("node_ids", expanding=True))))
_END_TASK_STEP = update(_nodes).where(_n.id == bindparam("node_id"), _n.status == ACTIVE,
                                      _n.task_id == bindparam("step_task")).values(status=bindparam("to_status"))
_MOVE = update(_nodes).where(_n.id == bindparam("node_id"), _n.status == bindparam("from_status")).values(
    status=bindparam("to_status"))
_SHARD = (_counters.node_id == bindparam("group_id"), _counters.shard == bindparam("shard_no"))
# Two conditional UPDATEs say whether a member emptied its shard, with no read: a member that
# waited for the row's lock sees the count its holder committed, so exactly one empties it.
_SHARD_DOWN = update(WorkflowCounter.__table__).where(*_SHARD, _counters.pending > 1).values(
    pending=_counters.pending - 1)
_SHARD_EMPTIED = update(WorkflowCounter.__table__).where(*_SHARD, _counters.pending == 1).values(pending=0)
_GROUP_DOWN = update(_nodes).where(_n.id == bindparam("node_id"), _n.status == ACTIVE).values(
    pending=_n.pending - 1)
_GROUP_LEFT = select(_n.pending).where(_n.id == bindparam("node_id"))


def node_and_parent(session, node_id):
    """(the step with this id, its parent or None), in one read; (None, None) if there is no such step."""
    row = session.connection().execute(_NODE_AND_PARENT, {"node_id": node_id}).one_or_none()
    if row is None:
        return None, None
    width = len(_NODE_COLUMNS)
    return Node(*row[:width]), (Node(*row[width:]) if row[width] is not None else None)


def steps_and_parents(session, node_ids):
    """{step id: (the step, its parent or None)} for these steps, in one read (claims read the
    steps of the tasks they take, so their ends need not)."""
    rows = session.connection().execute(_STEPS_AND_PARENTS, {"node_ids": list(node_ids)})
    width = len(_NODE_COLUMNS)
    return {row[0]: (Node(*row[:width]), Node(*row[width:]) if row[width] is not None else None) for row in rows}


def end_task_step(session, node_id, task_id, to_status):
    """Move an active task step that task_id runs to to_status; True if this transaction did (only one can)."""
    params = {"node_id": node_id, "step_task": task_id, "to_status": to_status}
    return session.connection().execute(_END_TASK_STEP, params).rowcount == 1


def steps_of(session, parent_id):
    """A composite's steps in order (its on_error step not among them)."""
    rows = session.execute(select(*_NODE_COLUMNS).where(WorkflowNode.parent_id == parent_id,
                                                        WorkflowNode.position >= 0)
                           .order_by(WorkflowNode.position))
    return [Node(*row) for row in rows]


def step_at(session, parent_id, position):
    """The step of parent_id at position (ON_ERROR: its on_error step), or None."""
    row = session.execute(select(*_NODE_COLUMNS).where(WorkflowNode.parent_id == parent_id,
                                                       WorkflowNode.position == position)).one_or_none()
    return Node(*row) if row else None


def active_nodes_of_tasks(session, task_ids):
    """The active steps that these tasks run."""
    rows = session.execute(select(*_NODE_COLUMNS).where(WorkflowNode.task_id.in_(list(task_ids)),
                                                        WorkflowNode.status == ACTIVE))
    return [Node(*row) for row in rows]


def move(session, node_id, from_status, to_status):
    """Move a step from one status to another; True if this transaction did (only one can)."""
    params = {"node_id": node_id, "from_status": from_status, "to_status": to_status}
    return session.connection().execute(_MOVE, params).rowcount == 1


def start_group(session, group, positions):
    """Start a waiting group whose members at these positions are to run (only one transaction
    can): a counter row per non-empty shard, the group counting those shards. True if this one did."""
    shards = min(SHARDS, len(positions)) or 1
    counts = {}
    for position in positions:
        counts[position % shards] = counts.get(position % shards, 0) + 1
    moved = session.execute(update(WorkflowNode).where(WorkflowNode.id == group.id, WorkflowNode.status == WAITING)
                            .values(status=ACTIVE, pending=len(counts), shards=shards)
                            .execution_options(synchronize_session=False)).rowcount == 1
    if moved:
        session.execute(delete(WorkflowCounter).where(WorkflowCounter.node_id == group.id)
                        .execution_options(synchronize_session=False))  # a retried group's old count
        if counts:
            session.execute(WorkflowCounter.__table__.insert(),
                            [dict(node_id=group.id, shard=shard, workflow_id=group.workflow_id, pending=n)
                             for shard, n in sorted(counts.items())])
    return moved


def member_done(session, group, position):
    """Count the member at position of an active group as finished; return 0 if it was the
    group's last, more if not, None if the group is no longer active.

    The member's shard row is held till commit, so members of one shard take turns and
    exactly one empties it; that one counts the shard on the group's row, held likewise,
    so exactly one commit sees the group reach zero.
    """
    connection = session.connection()
    if group.shards is not None:
        shard = {"group_id": group.id, "shard_no": position % group.shards}
        if connection.execute(_SHARD_DOWN, shard).rowcount == 1:
            return 1  # others of its shard are still unfinished
        if connection.execute(_SHARD_EMPTIED, shard).rowcount != 1:
            return None  # the shard was empty already: nothing to count
    if connection.execute(_GROUP_DOWN, {"node_id": group.id}).rowcount != 1:
        return None
    return connection.execute(_GROUP_LEFT, {"node_id": group.id}).scalar()


def set_task(session, node_id, task_id):
    """Record the task that runs a step."""
    session.execute(update(WorkflowNode).where(WorkflowNode.id == node_id).values(task_id=task_id)
                    .execution_options(synchronize_session=False))


def lock_running(session, workflow_id):
    """Lock the workflow's row; True if it is still running. Steps start only under this
    lock, so none starts after the commit that failed or cancelled the workflow."""
    status = session.scalar(select(Workflow.status).where(Workflow.id == workflow_id).with_for_update())
    return status == RUNNING


def finish(session, workflow_id, status, failed_task=None, error=None):
    """End a running workflow; True if this transaction did."""
    return session.execute(update(Workflow).where(Workflow.id == workflow_id, Workflow.status == RUNNING)
                           .values(status=status, failed_task=failed_task, error=error, finished_at=utcnow())
                           .execution_options(synchronize_session=False)).rowcount == 1


def status(session, workflow_id):
    """The workflow's status, or None if there is no such workflow."""
    return session.scalar(select(Workflow.status).where(Workflow.id == workflow_id))


def restart(session, workflow_id):
    """Put a failed or cancelled workflow back to running; True if this transaction did (only one can)."""
    return session.execute(update(Workflow).where(Workflow.id == workflow_id,
                                                  Workflow.status.in_((FAILED, CANCELLED)))
                           .values(status=RUNNING, failed_task=None, error=None, finished_at=None, swept=False)
                           .execution_options(synchronize_session=False)).rowcount == 1


def reopen(session, workflow_id):
    """Every step of a restarted workflow that did not succeed waits again, and so do its error
    callbacks, to run on a later failure."""
    session.execute(update(WorkflowNode).where(WorkflowNode.workflow_id == workflow_id,
                                               or_(WorkflowNode.status != SUCCEEDED,
                                                   WorkflowNode.position == ON_ERROR))
                    .values(status=WAITING, pending=0).execution_options(synchronize_session=False))


def unfinished_tasks(session, workflow_id):
    """Ids of the workflow's tasks that have not finished (its steps' latest tasks: a step runs
    again only once its task has finished)."""
    return session.scalars(select(Task.id).join(WorkflowNode, WorkflowNode.task_id == Task.id)
                           .where(WorkflowNode.workflow_id == workflow_id, Task.status.in_(UNFINISHED_STATES))
                           .order_by(Task.id)).all()


def task_results(session, task_ids):
    """task id -> its result."""
    return dict(session.execute(select(Task.id, Task.result).where(Task.id.in_(list(task_ids)))).all())


def task_ending(session, task_id):
    """(status, error, name) of a task."""
    return session.execute(select(Task.status, Task.error, Task.name).where(Task.id == task_id)).one()


def unswept(session, limit=100):
    """Failed or cancelled workflows whose unfinished tasks are still to be cancelled."""
    return session.scalars(select(Workflow.id).where(Workflow.status.not_in((RUNNING, SUCCEEDED)),
                                                     Workflow.swept.is_(False))
                           .order_by(Workflow.id).limit(limit)).all()


def cancels_members(session, workflow_id):
    """True if its unfinished tasks are to be cancelled: it was cancelled, or it failed and
    cancels its members on failure."""
    row = session.execute(select(Workflow.status, Workflow.cancel_on_failure)
                          .where(Workflow.id == workflow_id)).one_or_none()
    return row is not None and (row.status == CANCELLED or (row.status == FAILED and row.cancel_on_failure))


def unfinished_task_ids(session, workflow_id):
    """The tasks of its active task steps (queued, reserved or running), but its error
    callbacks': they run because it failed."""
    return session.scalars(select(WorkflowNode.task_id).where(
        WorkflowNode.workflow_id == workflow_id, WorkflowNode.status == ACTIVE, WorkflowNode.kind == "task",
        WorkflowNode.position != ON_ERROR, WorkflowNode.task_id.is_not(None))).all()


def _not_yet_cancelled(task_ids):
    return (Task.id.in_(list(task_ids)), Task.status.in_(UNFINISHED_STATES), Task.cancel_requested.is_(False))


def lock_uncancelled(session, task_ids):
    """Lock those of task_ids that are unfinished and not asked to stop, skipping rows another
    transaction holds; return the ids locked."""
    if not task_ids:
        return []
    return session.scalars(select(Task.id).where(*_not_yet_cancelled(task_ids)).with_for_update(skip_locked=True)).all()


def uncancelled(session, task_ids):
    """Those of task_ids that are unfinished and not asked to stop."""
    return session.scalars(select(Task.id).where(*_not_yet_cancelled(task_ids))).all() if task_ids else []


def mark_swept(session, workflow_id):
    """Record that an ended workflow's unfinished tasks are cancelled (not if it runs again)."""
    session.execute(update(Workflow).where(Workflow.id == workflow_id, Workflow.status != RUNNING).values(swept=True)
                    .execution_options(synchronize_session=False))


def kept_for(cutoff):
    """A clause on tasks: the task runs a step of a workflow still running, or that ended at or
    after cutoff. Such a task is kept: its result is handed on, and its workflow shows it."""
    return exists().where(WorkflowNode.id == Task.workflow_node, Workflow.id == WorkflowNode.workflow_id,
                          or_(Workflow.finished_at.is_(None), Workflow.finished_at >= cutoff))


def prune_ended(session, cutoff, batch=500):
    """Delete up to batch workflows that ended before cutoff and whose tasks are gone, with their
    steps; return how many."""
    has_tasks = exists().where(WorkflowNode.workflow_id == Workflow.id, Task.id == WorkflowNode.task_id)
    ids = session.scalars(select(Workflow.id).where(Workflow.finished_at < cutoff, ~has_tasks)
                          .order_by(Workflow.finished_at).limit(batch)).all()
    if ids:
        session.execute(delete(WorkflowCounter).where(WorkflowCounter.workflow_id.in_(ids))
                        .execution_options(synchronize_session=False))
        session.execute(delete(WorkflowNode).where(WorkflowNode.workflow_id.in_(ids))
                        .execution_options(synchronize_session=False))
        session.execute(delete(Workflow).where(Workflow.id.in_(ids)).execution_options(synchronize_session=False))
    return len(ids)

