"""/api/workflows: submit a JSON tree, follow it, cancel it, retry it; and the CLI's twins."""
import json

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

import db
from db.models import Task, Workflow, WorkflowNode
from tests.conftest import count_rows, wait_for
from tests.sample_tasks import FIXED


def step(value, **args):
    return {"name": "step", "args": {"value": value, **args}}


def submit(client, tree, status=202):
    answer = client.post("/api/workflows", json=tree)
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def settled(client, workflow_id, timeout=60):
    """GET the workflow once it has ended and none of its tasks is unfinished."""
    def ended():
        found = client.get(f"/api/workflows/{workflow_id}").get_json()
        tasks = [task for task in _tasks(found["tree"]) if task]
        done = found["status"] != "running" and all(t["status"] in ("succeeded", "failed", "cancelled")
                                                     for t in tasks)
        return found if done else None
    return wait_for(ended, timeout=timeout, message=f"workflow {workflow_id} to end")


def _tasks(tree):
    if tree["kind"] == "task":
        return [tree["task"]]
    below = [task for child in tree["steps"] for task in _tasks(child)]
    return below + (_tasks(tree["on_error"]) if tree["on_error"] else [])


def sample(name, labels=None):
    return REGISTRY.get_sample_value(name, labels or {}) or 0


@pytest.fixture
def fixed():
    """Values of failing steps to let succeed (a retried workflow's), cleared after the test."""
    yield FIXED
    FIXED.clear()


def test_a_chord_from_json_answers_its_members_then_shows_every_step(client):
    started_before = sample("workflows_started_total", {"how": "submitted"})
    succeeded_before = sample("workflows_finished_total", {"outcome": "succeeded"})
    answer = client.post("/api/workflows", json={"chord": {"group": [step(1), step(2), step(3)], "then": step(10)}})
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["status"] == "running" and len(body["tasks"]) == 3
    assert answer.headers["Location"] == f"/api/workflows/{body['id']}"
    found = settled(client, body["id"])
    assert found["status"] == "succeeded" and found["finished_at"] and found["error"] is None
    assert found["steps"] == {"total": 4, "succeeded": 4, "waiting": 0, "active": 0, "failed": 0, "cancelled": 0}
    chord = found["tree"]
    assert (chord["kind"], chord["path"], chord["status"]) == ("chord", "chord", "succeeded")
    members, then = chord["steps"][0]["steps"], chord["steps"][1]
    assert [m["path"] for m in members] == ["chord.group[0]", "chord.group[1]", "chord.group[2]"]
    assert [m["task"]["id"] for m in members] == body["tasks"]  # in tree order
    assert [m["task"]["result"] for m in members] == [1, 2, 3]
    assert then["path"] == "chord.then" and then["task"]["result"] == 16
    assert found["tasks"] == body["tasks"] + [then["task"]["id"]]
    # A member task's own page names its workflow.
    assert client.get(f"/api/tasks/{body['tasks'][0]}").get_json()["workflow"] == body["id"]
    listed = client.get("/api/tasks?name=step").get_json()
    assert {t["workflow"] for t in listed} == {body["id"]}
    assert sample("workflows_started_total", {"how": "submitted"}) == started_before + 1
    assert sample("workflows_finished_total", {"outcome": "succeeded"}) == succeeded_before + 1


def test_the_list_pages_and_filters_by_status(client):
    ok = submit(client, {"chain": [step(1)]})["id"]
    bad = submit(client, {"group": [step(2, fail=True), step(3)]})["id"]
    settled(client, ok), settled(client, bad)
    answer = client.get("/api/workflows")
    assert [w["id"] for w in answer.get_json()] == [bad, ok]
    assert json.loads(answer.headers["X-Pagination"])["total"] == 2
    failed = client.get("/api/workflows?status=failed").get_json()
    # Step 3 succeeded, or was cancelled by step 2's failure if that came first.
    assert [(w["id"], w["steps"]["failed"], w["steps"]["succeeded"] + w["steps"]["cancelled"])
            for w in failed] == [(bad, 1, 1)]
    assert client.get("/api/workflows?status=nosuch").status_code == 422


@pytest.mark.parametrize("tree, path", [
    ({"chain": [step(1), {"name": "nosuch"}]}, "chain[1]"),
    ({"chord": {"group": [step(1), {"name": "step", "args": {"value": "x"}}], "then": step(2)}}, "chord.group[1]"),
    ({"group": [{"chain": [step(1), {"name": "step", "priority": 1000}]}]}, None),
    ({"chain": [step(1)], "on_error": step(2, fail=True) | {"delay": -1}}, None),
])
def test_a_bad_step_is_a_422_naming_it_and_nothing_is_written(client, tree, path):
    answer = client.post("/api/workflows", json=tree)
    assert answer.status_code == 422
    details = answer.get_json()["details"]["json"]
    if path:
        assert list(details) == [path]
    assert count_rows(Workflow) == 0 and count_rows(WorkflowNode) == 0 and count_rows(Task) == 0


@pytest.mark.parametrize("tree, field", [
    ({"name": "step"}, "name"),  # one task is /api/tasks's
    ({"chain": [{"name": "step", "chain": [step(1)]}]}, "chain"),
    ({"chain": [step(1)], "delay": 1}, "delay"),
    ({"chain": []}, "chain"),
    ({"chord": {"then": step(1)}}, "chord"),
    ({"chain": [step(1)], "on_error": {"chain": [step(2)]}}, "on_error"),
    ({"group": [step(1)], "cancel_on_failure": 1}, "cancel_on_failure"),
    ({"chain": [step(1)], "extra": True}, "extra"),
])
def test_a_misshapen_tree_is_a_422_naming_the_field(client, tree, field):
    answer = client.post("/api/workflows", json=tree)
    assert answer.status_code == 422
    assert field in json.dumps(answer.get_json()["details"])
    assert count_rows(Workflow) == 0


def test_a_tree_too_deep_is_refused_and_json_too_deep_to_decode_is_a_400(client):
    deep = step(1)
    for _ in range(40):
        deep = {"chain": [deep]}
    answer = client.post("/api/workflows", json=deep)
    assert answer.status_code == 422 and "nest at most" in json.dumps(answer.get_json())
    # Nested past what Python decodes: a 400 like any invalid JSON, on every JSON route.
    for path in ("/api/workflows", "/api/tasks"):
        answer = client.post(path, data="[" * 100_000 + "]" * 100_000, content_type="application/json")
        assert answer.status_code == 400, answer.get_json()
        assert answer.get_json()["details"]["json"] == ["Invalid JSON body: nested too deeply."]
    assert count_rows(Workflow) == 0 and count_rows(Task) == 0


def test_cancelling_stops_what_runs_and_starts_nothing_more(client):
    cancelled_before = sample("workflows_finished_total", {"outcome": "cancelled"})
    body = submit(client, {"chain": [step(1, seconds=30), step(2)]})
    first = body["tasks"][0]
    wait_for(lambda: client.get(f"/api/tasks/{first}").get_json()["status"] == "running")
    answer = client.post(f"/api/workflows/{body['id']}/cancel")
    assert answer.status_code == 200 and answer.get_json()["status"] == "cancelled"
    found = settled(client, body["id"])
    assert [s["status"] for s in found["tree"]["steps"]] == ["cancelled", "waiting"]
    assert found["tree"]["steps"][0]["task"]["status"] == "cancelled"
    assert count_rows(Task) == 1  # the second step never started
    again = client.post(f"/api/workflows/{body['id']}/cancel")
    assert again.status_code == 409 and "already ended (cancelled)" in again.get_json()["message"]
    assert client.post("/api/workflows/999999/cancel").status_code == 404
    assert sample("workflows_finished_total", {"outcome": "cancelled"}) == cancelled_before + 1


def test_retry_reruns_only_what_did_not_succeed_and_goes_on(client, fixed):
    # Member 20 fails a little later, so the others have usually succeeded (one still
    # unfinished is cancelled by the failure, and reruns too).
    tree = {"chain": [step(1), {"chord": {"group": [step(10), step(20, fail=True, seconds=0.2), step(30)],
                                          "then": step(100)}},
                      step(1000)],
            "on_error": {"name": "report_failure"}}
    body = submit(client, tree)
    failed = settled(client, body["id"])
    assert failed["status"] == "failed" and "step 20 failed" in failed["error"]
    chord = failed["tree"]["steps"][1]
    broken = chord["steps"][0]["steps"][1]["task"]
    undone = [m["args"]["value"] for m in chord["steps"][0]["steps"] if m["status"] != "succeeded"]
    assert 20 in undone and failed["failed_task"] == broken["id"]
    assert failed["tree"]["on_error"]["task"]["result"]["task_id"] == broken["id"]
    # One member alone would settle nothing: the workflow reruns it.
    refused = client.post(f"/api/tasks/{broken['id']}/retry")
    assert refused.status_code == 409 and f"workflow {body['id']}" in refused.get_json()["message"]

    fixed.add(20)
    retried_before = sample("tasks_retried_total", {"name": "step"})
    restarts_before = sample("workflows_started_total", {"how": "retried"})
    retried = client.post(f"/api/workflows/{body['id']}/retry")
    assert retried.status_code == 202, retried.get_json()
    rerun = retried.get_json()["tasks"]
    assert len(rerun) == len(undone)  # the members that did not succeed, and only those
    assert sample("tasks_retried_total", {"name": "step"}) == retried_before + len(undone)
    assert sample("workflows_started_total", {"how": "retried"}) == restarts_before + 1
    done = settled(client, body["id"])
    assert done["status"] == "succeeded" and done["error"] is None and done["failed_task"] is None
    with db.session_scope() as session:
        again = session.get(Task, rerun[undone.index(20)])
        assert again.retry_of == broken["id"] and session.get(Task, broken["id"]).retried_by == again.id
        values = session.scalars(select(Task.args["value"]).where(Task.name == "step")).all()
    assert sorted(values) == sorted([1, 10, 20, 30, 100, 1000] + undone)  # step 1 and the others ran once
    chord = done["tree"]["steps"][1]
    # Each member got step 1's result, the rerun one too; the callback got all three.
    assert [m["task"]["result"] for m in chord["steps"][0]["steps"]] == [11, 21, 31]
    assert chord["steps"][1]["task"]["result"] == 100 + 11 + 21 + 31
    assert done["tree"]["steps"][2]["task"]["result"] == 1000 + 163
    assert done["tree"]["on_error"]["status"] == "waiting"  # it waits for a failure that never came
    assert client.post(f"/api/workflows/{body['id']}/retry").status_code == 409


def test_retry_waits_for_every_task_of_the_workflow_to_stop(client, fixed):
    body = submit(client, {"group": [step(5, fail=True), step(6, seconds=4)], "cancel_on_failure": False})
    slow = body["tasks"][1]
    wait_for(lambda: client.get(f"/api/workflows/{body['id']}").get_json()["status"] == "failed")
    refused = client.post(f"/api/workflows/{body['id']}/retry")
    assert refused.status_code == 409 and f"({slow})" in refused.get_json()["message"]
    assert client.post(f"/api/tasks/{slow}/cancel").status_code == 202
    settled(client, body["id"])
    fixed.add(5)
    assert client.post(f"/api/workflows/{body['id']}/retry").status_code == 202
    done = settled(client, body["id"])
    assert done["status"] == "succeeded" and [s["task"]["result"] for s in done["tree"]["steps"]] == [5, 6]


def test_a_branch_left_to_finish_ends_cancelled_not_active_and_a_retry_goes_on_from_it(client, fixed):
    tree = {"group": [step(40, fail=True), {"chain": [step(41, seconds=0.3), step(42)]}], "cancel_on_failure": False}
    body = submit(client, tree)
    found = settled(client, body["id"])
    assert found["status"] == "failed"
    broken, branch = found["tree"]["steps"]
    assert broken["status"] == "failed"
    # Its first step finished after the workflow failed; the next never starts, and nothing shows active.
    assert [branch["status"]] + [s["status"] for s in branch["steps"]] == ["cancelled", "succeeded", "waiting"]
    assert found["steps"]["active"] == 0
    fixed.add(40)
    assert client.post(f"/api/workflows/{body['id']}/retry").get_json()["tasks"] != []
    done = settled(client, body["id"])
    assert done["status"] == "succeeded"
    assert [s["task"]["result"] for s in done["tree"]["steps"][1]["steps"]] == [41, 83]
    assert count_rows(Task) == 4  # 40 twice, 41 once, 42 once
