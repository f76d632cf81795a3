"""service.example_tasks: off unless TASK_MODULES names it; each ends in the state it promises."""
import json
import subprocess
import sys

import db
import service.example_tasks  # noqa: F401  registers the examples (in this process only)
from db.models import Task
from service.runner import submit
from tests.conftest import ROOT, wait_for


def registered_names(task_modules):
    """The task names a fresh process registers with this TASK_MODULES setting."""
    code = ("import json; from service.runner import registry; "
            "from service.runner.registry import load_task_modules; "
            f"load_task_modules({{'TASK_MODULES': {task_modules!r}}}); "
            "print(json.dumps(registry.names()))")
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    return set(json.loads(output))


def test_examples_are_off_unless_task_modules_names_them():
    examples = {"example_fail", "example_retry", "example_progress", "example_add"}
    assert not examples & registered_names([])
    assert examples <= registered_names(["service.example_tasks"])


def enqueue(name, args):
    """Submit and commit a task; return its id."""
    task_id = submit.enqueue(db.Session, name, args).id
    db.Session.commit()
    db.Session.remove()
    return task_id


def row(task_id):
    with db.session_scope() as session:
        return session.get(Task, task_id)


def finished(task_id, timeout=30):
    """Wait for the task to finish; return its row."""
    return wait_for(lambda: row(task_id).finished and row(task_id), timeout=timeout,
                    message=f"task {task_id} to finish")


def test_example_fail_fails_at_once_with_its_error(runner):
    task = finished(enqueue("example_fail", {"message": "as promised"}))
    assert task.status == "failed" and task.attempts == 1
    assert task.error == "ExampleError: as promised"
    assert "raise ExampleError(message)" in task.traceback


def test_example_retry_succeeds_after_its_failures(runner):
    task = finished(enqueue("example_retry", {"failures": 2}))
    assert task.status == "succeeded", task.error
    assert task.attempts == 3 and task.result == {"attempts": 3}


def test_example_progress_reports_progress_before_it_succeeds(runner):
    task_id = enqueue("example_progress", {"seconds": 2, "steps": 8})
    seen = wait_for(lambda: row(task_id).status == "running" and row(task_id).progress > 0
                    and row(task_id), timeout=15, interval=0.05, message="progress above 0")
    assert 0 < seen.progress < 100 and seen.message.startswith("step ")
    task = finished(task_id)
    assert task.status == "succeeded" and task.result == {"steps": 8}


def test_example_add_sums_a_chord_as_the_readme_submits_it(client):
    body = {"chord": {"group": [{"name": "example_add", "args": {"number": 1}},
                                {"name": "example_add", "args": {"number": 2}}],
                      "then": {"name": "example_add", "args": {"number": 10}}}}
    answer = client.post("/api/workflows", json=body)
    assert answer.status_code == 202
    workflow = answer.get_json()["id"]
    found = wait_for(lambda: (lambda w: w if w["status"] != "running" else None)(
        client.get(f"/api/workflows/{workflow}").get_json()), message="the chord to end")
    assert found["status"] == "succeeded"
    assert found["tree"]["steps"][1]["task"]["result"] == 13
