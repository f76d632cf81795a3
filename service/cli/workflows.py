"""`tasks workflow list|show|cancel|retry`: chains, groups and chords of tasks."""
import json

import click

from db import session_scope, workflow_views
from db import workflows as steps
from db.models import MAX_ID, WORKFLOW_STATES
from service.cli import main
from service.cli.database import connected
from service.cli.errors import CommandError
from service.cli.text import brief, echo_page, stamp, to_json
from service.runner import QueueFull, workflows
from service.workflow_schemas import WorkflowOut, WorkflowSummary


@main.group("workflow")
def workflow_group():
    """List, show, cancel and retry workflows (chains, groups and chords of tasks)."""


@workflow_group.command("list")
@click.option("--status", type=click.Choice(WORKFLOW_STATES))
@click.option("--page", type=click.IntRange(1, MAX_ID), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/workflows).")
def list_workflows(status, page, page_size, as_json):
    """List workflows, newest first, with their task steps by status."""
    with connected():
        with session_scope() as session:
            found, total = workflow_views.list_workflows(session, page_size, (page - 1) * page_size, status)
    echo_page("workflows", found, total, page, page_size, as_json, WorkflowSummary(many=True).dump,
              ["ID", "STATUS", "STEPS", "CREATED", "FINISHED", "ERROR"],
              lambda w: [w["id"], w["status"], step_counts(w["steps"]), stamp(w["created_at"]),
                         stamp(w["finished_at"]), brief(w["error"])])


@workflow_group.command("show")
@click.argument("workflow_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/workflows/ID).")
def show(workflow_id, as_json):
    """Show workflow ID: its status and every step, with its task, result or error."""
    with connected():
        with session_scope() as session:
            found = workflow_views.get_workflow(session, workflow_id) if workflow_id <= MAX_ID else None
    if found is None:
        raise CommandError(f"workflow {workflow_id} not found")
    if as_json:
        click.echo(to_json(WorkflowOut().dump(found)))
        return
    lines = [f"workflow {found['id']}: {found['status']}",
             f"steps:    {step_counts(found['steps'])}",
             f"created:  {stamp(found['created_at'])}", f"finished: {stamp(found['finished_at'])}"]
    if found["error"]:
        lines.append(f"error:    task {found['failed_task']}: {found['error']}")
    click.echo("\n".join(lines + [""] + tree_lines(found["tree"])))


@workflow_group.command("cancel")
@click.argument("workflow_id", metavar="ID", type=int)
def cancel(workflow_id):
    """Cancel running workflow ID: no further step starts, its unfinished tasks are cancelled."""
    with connected():
        with session_scope() as session:
            status = steps.status(session, workflow_id) if workflow_id <= MAX_ID else None
            if status is None:
                raise CommandError(f"workflow {workflow_id} not found")
            if not workflows.cancel(session, workflow_id):
                raise CommandError(f"workflow {workflow_id} already ended ({steps.status(session, workflow_id)})")
            session.commit()  # its unfinished tasks are cancelled right after this commit
    click.echo(f"workflow {workflow_id} cancelled")


@workflow_group.command("retry")
@click.argument("workflow_id", metavar="ID", type=int)
def retry(workflow_id):
    """Run failed or cancelled workflow ID again from where it stopped; print the ids of the tasks started."""
    with connected():
        with session_scope() as session:
            try:
                started = workflows.retry(session, workflow_id) if workflow_id <= MAX_ID else None
            except (workflows.NotRetryable, QueueFull) as error:
                raise CommandError(f"cannot retry workflow {workflow_id}: {error}") from None
            if started is None:
                raise CommandError(f"workflow {workflow_id} not found")
            session.commit()
    click.echo(" ".join(map(str, started)) or f"workflow {workflow_id} is running again")


def step_counts(counts):
    """Task steps by status, as text: "2 of 5 succeeded, 1 failed, 2 waiting"."""
    parts = [f"{counts['succeeded']} of {counts['total']} succeeded"]
    parts += [f"{counts[state]} {state}" for state in ("active", "failed", "cancelled", "waiting") if counts[state]]
    return ", ".join(parts)


def tree_lines(step, depth=0, label=""):
    """A step and those below it, indented, one line each."""
    pad = "  " * depth + label
    if step["kind"] != "task":
        lines = [f"{pad}{step['kind']}  [{step['status']}]"]
        for index, child in enumerate(step["steps"]):
            then = "then: " if step["kind"] == "chord" and index == 1 else ""
            lines += tree_lines(child, depth + 1, then)
        if step["on_error"]:
            lines += tree_lines(step["on_error"], depth + 1, "on_error: ")
        return lines
    task = step["task"]
    if task is None:
        return [f"{pad}{step['name']}  [{step['status']}]  not started"]
    outcome = (f"error: {brief(task['error'], 60)}" if task["error"] else
               f"result: {brief(json.dumps(task['result'], ensure_ascii=False), 60)}" if task["status"] == "succeeded"
               else f"{task['progress']}%")
    return [f"{pad}{step['name']}  [{step['status']}]  task {task['id']} {task['status']}  {outcome}"]
