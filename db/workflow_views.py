"""Reads of workflows for the API, the dashboard and the CLI: one workflow's tree, a page of them."""
from sqlalchemy import bindparam, func, select

from db.models import Task, Workflow, WorkflowNode
from db.workflows import ON_ERROR

STEP_STATES = ("waiting", "active", "succeeded", "failed", "cancelled")
_TASK_COLUMNS = (Task.id, Task.name, Task.status, Task.progress, Task.message, Task.result, Task.error,
                 Task.attempts, Task.started_at, Task.finished_at)


_TASK_LABELS = tuple(column.label(f"task_{column.key}") for column in _TASK_COLUMNS)
# The workflow, its steps and their tasks in one statement: as of one moment. (On MySQL each
# statement of a READ COMMITTED transaction reads its own moment: read apart, a step could
# show active while its task, read a moment later, had ended and settled it.)
_WORKFLOW_TREE = (select(Workflow, WorkflowNode, *_TASK_LABELS)
                  .join(WorkflowNode, WorkflowNode.workflow_id == Workflow.id)
                  .outerjoin(Task, Task.id == WorkflowNode.task_id)
                  .where(Workflow.id == bindparam("workflow_id")).order_by(WorkflowNode.id))


def get_workflow(session, workflow_id):
    """The workflow as a dict: its row, task step counts, and its tree of steps; None if there is none."""
    rows = session.execute(_WORKFLOW_TREE, {"workflow_id": workflow_id}).all()
    if not rows:
        return None
    workflow, nodes = rows[0].Workflow, [row.WorkflowNode for row in rows]
    found = {row.WorkflowNode.task_id: {column.key: row._mapping[f"task_{column.key}"] for column in _TASK_COLUMNS}
             for row in rows if row.task_id is not None}
    below = {}
    for node in nodes:
        below.setdefault(node.parent_id, []).append(node)
    [root] = below[None]
    tree = _tree(root, root.kind, below, found)
    return {**_summary(workflow), "steps": _step_counts(nodes), "tree": tree, "tasks": _task_ids(tree)}


def list_workflows(session, limit, offset, status=None):
    """Return (one page of workflows newest first, without their trees, total count)."""
    filters = [Workflow.status == status] if status else []
    page = session.scalars(select(Workflow).where(*filters).order_by(Workflow.id.desc())
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(Workflow).where(*filters))
    counts = {}
    if page:
        rows = session.execute(select(WorkflowNode.workflow_id, WorkflowNode.status, func.count())
                               .where(WorkflowNode.workflow_id.in_([w.id for w in page]),
                                      WorkflowNode.kind == "task", WorkflowNode.position != ON_ERROR)
                               .group_by(WorkflowNode.workflow_id, WorkflowNode.status))
        for workflow_id, step_status, n in rows:
            counts.setdefault(workflow_id, {})[step_status] = n
    return [{**_summary(w), "steps": _with_total(counts.get(w.id, {}))} for w in page], total


def workflow_ids_of_steps(session, node_ids):
    """workflow step id -> its workflow's id."""
    node_ids = {node_id for node_id in node_ids if node_id is not None}
    if not node_ids:
        return {}
    return dict(session.execute(select(WorkflowNode.id, WorkflowNode.workflow_id)
                                .where(WorkflowNode.id.in_(node_ids))).all())


def with_workflows(session, tasks):
    """Set each task's `workflow`: the id of the workflow whose step it runs, or None."""
    found = workflow_ids_of_steps(session, [task.workflow_node for task in tasks])
    for task in tasks:
        task.workflow = found.get(task.workflow_node)
    return tasks


def _summary(workflow):
    return {"id": workflow.id, "status": workflow.status, "cancel_on_failure": workflow.cancel_on_failure,
            "failed_task": workflow.failed_task, "error": workflow.error,
            "created_at": workflow.created_at, "finished_at": workflow.finished_at}


def _step_counts(nodes):
    counts = {}
    for node in nodes:
        if node.kind == "task" and node.position != ON_ERROR:
            counts[node.status] = counts.get(node.status, 0) + 1
    return _with_total(counts)


def _with_total(counts):
    """Task steps by status (error callbacks not counted), and their total."""
    return {**{state: counts.get(state, 0) for state in STEP_STATES}, "total": sum(counts.values())}


def _tree(node, path, below, found):
    """One step as a dict: a task step with its task's state, a composite with its steps."""
    shown = {"kind": node.kind, "path": path, "status": node.status}
    if node.kind == "task":
        task = found.get(node.task_id)
        return {**shown, "name": node.spec["name"], "args": node.spec["args"], "options": node.spec["options"],
                "task": task}
    children = sorted(below.get(node.id, []), key=lambda child: child.position)
    on_error = [child for child in children if child.position == ON_ERROR]
    steps = [child for child in children if child.position != ON_ERROR]
    if node.kind == "chord":
        paths = [f"{path}.group", f"{path}.then"]
    else:
        paths = [f"{path}[{n}]" for n in range(len(steps))]
    shown["steps"] = [_tree(child, each, below, found) for child, each in zip(steps, paths)]
    shown["on_error"] = _tree(on_error[0], f"{path}.on_error", below, found) if on_error else None
    return shown


def _task_ids(tree):
    """The ids of the tasks the steps run now, in tree order (a step not yet started has none)."""
    if tree["kind"] == "task":
        return [tree["task"]["id"]] if tree["task"] else []
    ids = [task_id for step in tree["steps"] for task_id in _task_ids(step)]
    return ids + (_task_ids(tree["on_error"]) if tree["on_error"] else [])
