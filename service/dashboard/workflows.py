"""The dashboard's workflow pages: the list, and one workflow's tree of steps.

Cancel and Retry are forms whose action is the JSON API's route (dashboard.js sends
them with the page's CSRF token and shows the answer), like every other action.
"""
from db import Session, workflow_views
from db.models import RUNNING, UNFINISHED_STATES, WORKFLOW_STATES, utcnow
from service.dashboard import blp, list_page, page
from service.workflow_schemas import WorkflowQuery


@blp.route("/workflows")
def workflow_list():
    """Workflows by status, newest first, a page at a time."""
    return list_page("workflows.html", WorkflowQuery(), workflow_views.list_workflows, states=WORKFLOW_STATES)


@blp.route("/workflows/<id:workflow_id>")
def workflow_detail(workflow_id):
    """One workflow: its status, step counts, error and tree of steps, with Cancel or Retry."""
    workflow = workflow_views.get_workflow(Session, workflow_id)
    unfinished = [] if workflow is None else unfinished_tasks(workflow["tree"])
    return page("workflow.html", workflow=workflow, workflow_id=workflow_id, unfinished=unfinished,
                now=utcnow()), 200 if workflow is not None else 404


def unfinished_tasks(step):
    """The ids of the tasks under step that have not finished: an ended workflow's page stays
    live until they have (a cancelled one's running tasks stop, or they were let finish)."""
    if step["kind"] == "task":
        task = step["task"]
        return [task["id"]] if task is not None and task["status"] in UNFINISHED_STATES else []
    below = step["steps"] + ([step["on_error"]] if step["on_error"] else [])
    return [task_id for child in below for task_id in unfinished_tasks(child)]


@blp.app_template_filter("step_word")
def step_word(status, workflow_status):
    """A step's status as a word: a step still waiting when its workflow has ended will not start."""
    return "not started" if status == "waiting" and workflow_status != RUNNING else status
