"""/api/workflows: submit chains, groups and chords of tasks, follow them, cancel and retry them."""
from flask import url_for
from flask.views import MethodView
from flask_smorest import abort

from db import Session, workflow_views
from db import workflows as steps
from service.api import Blueprint, PAGE_HEADERS, one_page
from service.api.openapi import LOCATION
from service.runner import InvalidWorkflow, chain, chord, enqueue, group, signature, workflows
from service.runner.canvas import OPTIONS
from service.workflow_schemas import WorkflowIn, WorkflowOut, WorkflowQuery, WorkflowStarted, WorkflowSummary

blp = Blueprint("workflows", __name__, url_prefix="/api/workflows",
                description="Chains, groups and chords of tasks, each next step started once")


def to_canvas(step):
    """A step as WorkflowIn loaded it -> the chain, group, chord or signature it describes."""
    on_error = to_canvas(step["on_error"]) if "on_error" in step else None
    if "chain" in step:
        return chain(*map(to_canvas, step["chain"]), on_error=on_error)
    if "group" in step:
        return group(*map(to_canvas, step["group"]), on_error=on_error)
    if "chord" in step:
        header = step["chord"]
        return chord(group(*map(to_canvas, header["group"])), to_canvas(header["then"]), on_error=on_error)
    return signature(step["name"], step.get("args"), **{key: step[key] for key in OPTIONS if key in step})


def find_workflow(workflow_id):
    """Return the workflow as workflow_views shows it, or answer 404."""
    found = workflow_views.get_workflow(Session, workflow_id)
    if found is None:
        abort(404, message=f"workflow {workflow_id} not found")
    return found


def started(workflow_id, task_ids, status=202):
    return ({"id": workflow_id, "status": "running", "tasks": task_ids}, status,
            {"Location": url_for("workflows.WorkflowItem", workflow_id=workflow_id)})


@blp.route("")
class Workflows(MethodView):
    @blp.arguments(WorkflowIn)
    @blp.response(202, WorkflowStarted, headers={"Location": LOCATION},
                  description="Submitted: the steps that can start are queued")
    @blp.alt_response(422, description="A step names an unknown task, has invalid arguments or options, or the "
                                       "tree is too big or too deep; the message names the step's path")
    def post(self, data):
        """Submit a chain, group or chord of tasks; each next step starts when what it waits for ends."""
        cancel_on_failure = data.pop("cancel_on_failure")
        try:
            workflow_id, task_ids = enqueue(Session, to_canvas(data), cancel_on_failure=cancel_on_failure)
        except InvalidWorkflow as error:
            Session.rollback()
            abort(422, message=str(error), details={"json": {error.path: [error.message]}})
        Session.commit()
        return started(workflow_id, task_ids)

    @blp.arguments(WorkflowQuery, location="query")
    @blp.response(200, WorkflowSummary(many=True), headers=PAGE_HEADERS)
    def get(self, query):
        """List workflows, newest first, optionally by status."""
        return one_page(workflow_views.list_workflows, query)


@blp.route("/<id:workflow_id>")
class WorkflowItem(MethodView):
    @blp.response(200, WorkflowOut)
    def get(self, workflow_id):
        """Get a workflow: its status, and every step's status, task, result or error."""
        return find_workflow(workflow_id)


@blp.route("/<id:workflow_id>/cancel")
class WorkflowCancel(MethodView):
    @blp.response(200, WorkflowOut, description="Cancelled: its unfinished tasks are cancelled, running ones "
                                                "asked to stop")
    @blp.alt_response(409, description="Already ended")
    def post(self, workflow_id):
        """Cancel a running workflow: no further step starts, and its unfinished tasks are cancelled."""
        status = steps.status(Session, workflow_id)
        if status is None:
            abort(404, message=f"workflow {workflow_id} not found")
        if not workflows.cancel(Session, workflow_id):
            Session.rollback()
            abort(409, message=f"workflow {workflow_id} already ended ({steps.status(Session, workflow_id)})")
        Session.commit()  # its tasks are cancelled right after this commit
        return find_workflow(workflow_id)


@blp.route("/<id:workflow_id>/retry")
class WorkflowRetry(MethodView):
    @blp.response(202, WorkflowStarted, headers={"Location": LOCATION},
                  description="Running again: every step that did not succeed runs again, each as a new "
                              "task linked to the one before")
    @blp.alt_response(409, description="Not failed or cancelled, or some of its tasks have not stopped yet")
    def post(self, workflow_id):
        """Retry a failed or cancelled workflow from where it stopped."""
        try:
            task_ids = workflows.retry(Session, workflow_id)
        except workflows.NotRetryable as error:
            Session.rollback()
            abort(409, message=str(error))
        if task_ids is None:
            abort(404, message=f"workflow {workflow_id} not found")
        Session.commit()
        return started(workflow_id, task_ids)
