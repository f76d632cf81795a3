"""/api/tasks: submit tasks, follow them, cancel them."""
from flask import url_for
from flask.views import MethodView
from flask_smorest import abort

from db import Session, task_views, tasks
from service.api import Blueprint, PAGE_HEADERS, one_page, require_body
from service.api.openapi import LOCATION
from service.runner import KeyReused, actions
from service.runner.actions import NotRetryable
from service.runner.group_commit import enqueue_and_commit
from service.runner.submit import enqueue_or_find
from service.schemas import BulkOut, CancelIn, RetryIn, SubmitHeaders, TaskIn, TaskOut, TaskQuery

blp = Blueprint("tasks", __name__, url_prefix="/api/tasks", description="Background tasks")


def find_task(task_id):
    """Return the task or answer 404."""
    task = tasks.get_task(Session, task_id)
    if task is None:
        abort(404, message=f"task {task_id} not found")
    return task_views.described(Session, [task])[0]


@blp.route("")
class Tasks(MethodView):
    @blp.arguments(TaskIn)
    @blp.arguments(SubmitHeaders, location="headers")
    @blp.response(202, TaskOut, headers={"Location": LOCATION})
    @blp.alt_response(200, schema=TaskOut, headers={"Location": LOCATION},
                      description="The task this Idempotency-Key already names; nothing was added")
    @blp.alt_response(422, description="Unknown task name, invalid arguments, or an Idempotency-Key "
                                       "already used with another body")
    def post(self, data, headers):
        """Queue a registered task; it runs in the background."""
        key = headers.get("idempotency_key")
        if key is None:  # nothing else in this transaction: commit with concurrent submits
            task = enqueue_and_commit(Session, data.pop("name"), data.pop("args"), **data)
            return task, 202, {"Location": url_for("tasks.TaskItem", task_id=task.id)}
        try:
            task, created = enqueue_or_find(Session, data.pop("name"), data.pop("args"), unique_key=key, **data)
        except KeyReused as error:
            Session.rollback()
            abort(422, message=str(error), details={"headers": {"Idempotency-Key": [str(error)]}})
        Session.commit()
        return task, 202 if created else 200, {"Location": url_for("tasks.TaskItem", task_id=task.id)}

    @blp.arguments(TaskQuery, location="query")
    @blp.response(200, TaskOut(many=True), headers=PAGE_HEADERS)
    def get(self, query):
        """List tasks, newest first, optionally by status and name."""
        return one_page(list_described, query)


def list_described(session, limit, offset, **filters):
    page, total = tasks.list_tasks(session, limit, offset, **filters)
    return task_views.described(session, page), total


@blp.route("/<id:task_id>")
class TaskItem(MethodView):
    @blp.response(200, TaskOut)
    def get(self, task_id):
        """Get a task: its status, progress, result or error."""
        return find_task(task_id)


@blp.route("/<id:task_id>/cancel")
class TaskCancel(MethodView):
    @blp.response(200, TaskOut, description="Cancelled before it ran")
    @blp.alt_response(202, schema=TaskOut, description="Running; the task was asked to stop")
    @blp.alt_response(409, description="Already finished")
    def post(self, task_id):
        """Cancel a queued task, or ask a running one to stop."""
        outcome, task = actions.cancel_task(Session, task_id)
        if outcome is None:
            abort(404, message=f"task {task_id} not found")
        if outcome == tasks.CANCEL_TOO_LATE:
            abort(409, message=f"task {task_id} already finished ({task.status})")
        task_views.described(Session, [task])
        if outcome == tasks.CANCEL_REQUESTED:  # its runner sees it on its next heartbeat
            return task, 202
        return task


@blp.route("/<id:task_id>/retry")
class TaskRetry(MethodView):
    @blp.response(202, TaskOut, headers={"Location": LOCATION},
                  description="The retry, a new task; the old one keeps its error and points at it")
    @blp.alt_response(409, description="Not failed or cancelled, or retried already")
    @blp.alt_response(422, description="Its task name or arguments are no longer valid")
    def post(self, task_id):
        """Retry a failed or cancelled task as a new task linked to it."""
        try:
            task = actions.retry_task(Session, task_id)
        except NotRetryable as error:
            abort(409, message=str(error))
        if task is None:
            abort(404, message=f"task {task_id} not found")
        Session.commit()
        return task, 202, {"Location": url_for("tasks.TaskItem", task_id=task.id)}


@blp.route("/retry")
class TasksRetry(MethodView):
    @blp.arguments(RetryIn)
    @blp.response(200, BulkOut)
    def post(self, data):
        """Retry every failed or cancelled task that matches the filter (and was not retried yet)."""
        require_body()
        dry_run = data.pop("dry_run")
        matched, retried = actions.retry_matching(Session, dry_run=dry_run, **data)
        return {"matched": matched, "affected": retried, "dry_run": dry_run}


@blp.route("/cancel")
class TasksCancel(MethodView):
    @blp.arguments(CancelIn)
    @blp.response(200, BulkOut, description="affected: queued tasks cancelled plus running ones asked to stop")
    def post(self, data):
        """Cancel every queued task that matches the filter and ask the running ones to stop."""
        require_body()
        dry_run = data.pop("dry_run")
        matched, cancelled, asked = actions.cancel_matching(Session, dry_run=dry_run, **data)
        return {"matched": matched, "affected": cancelled + asked, "dry_run": dry_run}
