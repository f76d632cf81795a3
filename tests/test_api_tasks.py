"""/api/tasks over the Flask test client, on the real database and runner."""
import threading

import pytest

from db.models import Task, User
from tests.conftest import count_rows, wait_for


def submit(client, payload):
    return client.post("/api/tasks", json=payload)


def wait_task(client, task_id, *statuses):
    def current():
        body = client.get(f"/api/tasks/{task_id}").get_json()
        return body if body["status"] in statuses else None

    return wait_for(current, message=f"task {task_id} to reach {statuses}")


def test_submit_returns_202_with_location_and_the_task_runs(client):
    response = submit(client, {"name": "create_user", "args": {"name": "ann", "age": 30}})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("queued", "running", "succeeded")
    assert response.headers["Location"] == f"/api/tasks/{body['id']}"
    done = wait_task(client, body["id"], "succeeded", "failed")
    assert done["status"] == "succeeded"
    user = client.get(f"/api/users/{done['result']}").get_json()
    assert (user["name"], user["age"]) == ("ann", 30)


def test_task_submitted_over_http_runs_without_app_context(client):
    task_id = submit(client, {"name": "probe"}).get_json()["id"]
    done = wait_task(client, task_id, "succeeded", "failed")
    assert done["result"]["app_context"] is False
    assert count_rows(User, User.name == "probe") == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "nope", "args": {}}, "name"),
        ({"args": {}}, "name"),
        ({"name": "create_user", "args": {"name": "x", "age": "old"}}, "args"),
        ({"name": "create_user", "args": {"name": "", "age": 1}}, "args"),
        ({"name": "create_user", "args": {"name": "x", "age": 1, "delay": 10_000}}, "args"),
        ({"name": "create_user", "args": {"name": "x", "age": 1, "extra": 1}}, "args"),
        ({"name": "create_user", "args": [1, 2]}, "args"),
        ({"name": "create_user", "args": {"name": "x", "age": 1}, "delay": -1}, "delay"),
        ({"name": "create_user", "args": {"name": "x", "age": 1}, "run_at": "soon"}, "run_at"),
        ({"name": "noop", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"name": "noop", "max_attempts": 0}, "max_attempts"),
        ({"name": "noop", "colour": "red"}, "colour"),
    ],
)
def test_invalid_submission_is_422_naming_the_field_and_writes_nothing(client, payload, field):
    response = submit(client, payload)
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422
    assert field in body["details"]["json"]
    assert count_rows(Task) == 0


def test_unknown_task_error_lists_the_known_names(client):
    body = submit(client, {"name": "drop_tables"}).get_json()
    message = body["details"]["json"]["name"][0]
    assert "drop_tables" in message and "create_user" in message


@pytest.mark.parametrize(
    "data, content_type",
    [('{"name": ', "application/json"), ("not json", "application/json"), ("{'a': 1}", "application/json")],
)
def test_malformed_json_is_400_and_writes_nothing(client, data, content_type):
    response = client.post("/api/tasks", data=data, content_type=content_type)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400
    assert "json" in body["details"]
    assert count_rows(Task) == 0


def test_empty_body_is_422_name_missing(client):
    response = client.post("/api/tasks", data="", content_type="application/json")
    assert response.status_code == 422
    assert "name" in response.get_json()["details"]["json"]
    assert count_rows(Task) == 0


def test_body_that_is_not_an_object_is_422(client):
    response = client.post("/api/tasks", json=["create_user"])
    assert response.status_code == 422
    assert count_rows(Task) == 0


def test_too_large_body_is_413_and_writes_nothing(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    payload = {"name": "create_user", "args": {"name": "x" * 2000, "age": 1}}
    response = submit(client, payload)
    assert response.status_code == 413
    assert response.get_json()["code"] == 413
    assert count_rows(Task) == 0


def test_unknown_route_is_404_and_wrong_method_is_405_in_json(client):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.get_json()["code"] == 404
    wrong = client.delete("/api/tasks")
    assert wrong.status_code == 405
    assert wrong.get_json()["code"] == 405
    assert "POST" in wrong.headers["Allow"]


def test_unknown_task_id_is_404(client):
    response = client.get("/api/tasks/999999")
    assert response.status_code == 404
    assert response.get_json()["message"] == "task 999999 not found"


def test_full_queue_answers_503_with_retry_after(make_app):
    client = make_app(TASK_MAX_QUEUED=2, TASK_WORKERS=0).test_client()
    for _ in range(2):
        assert submit(client, {"name": "noop"}).status_code == 202
    response = submit(client, {"name": "noop"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert count_rows(Task) == 2


def test_list_filters_by_status_and_name_newest_first_with_pagination(client):
    ids = [submit(client, {"name": "noop", "delay": 3600}).get_json()["id"] for _ in range(3)]
    failed = submit(client, {"name": "fail_always"}).get_json()["id"]
    wait_task(client, failed, "failed")
    queued = client.get("/api/tasks?status=queued&name=noop&page_size=2")
    assert queued.status_code == 200
    assert [t["id"] for t in queued.get_json()] == ids[::-1][:2]
    assert '"total": 3' in queued.headers["X-Pagination"]
    assert [t["id"] for t in client.get("/api/tasks?status=failed").get_json()] == [failed]
    assert client.get("/api/tasks?status=bogus").status_code == 422
    assert client.get("/api/tasks?page=0").status_code == 422


def test_cancel_queued_running_and_finished_tasks(client):
    queued = submit(client, {"name": "noop", "delay": 3600}).get_json()["id"]
    response = client.post(f"/api/tasks/{queued}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"

    running = submit(client, {"name": "sleepy", "args": {"seconds": 60}}).get_json()["id"]
    wait_task(client, running, "running")
    response = client.post(f"/api/tasks/{running}/cancel")
    assert response.status_code == 202
    assert response.get_json()["cancel_requested"] is True
    wait_task(client, running, "cancelled")

    assert client.post(f"/api/tasks/{queued}/cancel").status_code == 409
    assert client.post("/api/tasks/424242/cancel").status_code == 404
    assert count_rows(User) == 0


def test_submissions_start_no_thread_per_request(client):
    client.get("/healthz")  # starts the runner
    before = threading.active_count()
    for _ in range(100):
        assert submit(client, {"name": "noop"}).status_code == 202
    assert threading.active_count() == before
    wait_for(lambda: count_rows(Task, Task.status == "succeeded") == 100, message="100 done")
    assert threading.active_count() == before


def test_run_at_in_the_future_is_stored_as_utc(client):
    body = submit(client, {"name": "noop", "run_at": "2030-01-01T02:00:00+02:00"}).get_json()
    assert body["run_after"] == "2030-01-01T00:00:00+00:00"
    assert body["status"] == "queued"


def test_openapi_document_lists_the_routes(client):
    spec = client.get("/openapi.json").get_json()
    for path in ("/api/tasks", "/api/tasks/{task_id}", "/api/tasks/{task_id}/cancel",
                 "/api/users", "/user/thread", "/healthz", "/readyz"):
        assert path in spec["paths"]
