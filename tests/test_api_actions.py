"""Retry and cancel, one task or every task a filter matches, and /api/stats."""
import threading

from sqlalchemy import select

import db
from db.models import Task, User
from tests.conftest import count_rows, wait_for


def submit(client, payload):
    response = client.post("/api/tasks", json=payload)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def wait_status(client, task_id, *statuses):
    return wait_for(lambda: (body := client.get(f"/api/tasks/{task_id}").get_json())["status"]
                    in statuses and body, message=f"task {task_id} to be {statuses}")


def failed_task(client):
    """A task that failed (fail_always raises after writing a row that is rolled back)."""
    task_id = submit(client, {"name": "fail_always"})
    return wait_status(client, task_id, "failed")


def test_retry_is_a_new_task_linked_both_ways_and_the_old_one_keeps_its_error(client):
    failed = failed_task(client)
    response = client.post(f"/api/tasks/{failed['id']}/retry")
    assert response.status_code == 202
    retry = response.get_json()
    assert response.headers["Location"] == f"/api/tasks/{retry['id']}"
    assert retry["id"] != failed["id"] and retry["retry_of"] == failed["id"]
    assert (retry["name"], retry["args"]) == (failed["name"], failed["args"])
    old = client.get(f"/api/tasks/{failed['id']}").get_json()
    assert old["retried_by"] == retry["id"]
    assert old["status"] == "failed" and "boom" in old["error"] and old["traceback"]
    assert wait_status(client, retry["id"], "failed")["retry_of"] == failed["id"]


def test_a_task_is_retried_once_and_only_when_failed_or_cancelled(client):
    failed = failed_task(client)
    assert client.post(f"/api/tasks/{failed['id']}/retry").status_code == 202
    again = client.post(f"/api/tasks/{failed['id']}/retry")
    assert again.status_code == 409
    assert "retried already" in again.get_json()["message"]
    queued = submit(client, {"name": "noop", "delay": 3600})
    assert client.post(f"/api/tasks/{queued}/retry").status_code == 409
    assert client.post("/api/tasks/424242/retry").status_code == 404
    assert count_rows(Task) == 3


def test_concurrent_retries_of_one_task_make_one_new_task(make_app):
    app = make_app()
    client = app.test_client()
    failed = failed_task(client)
    statuses = []

    def retry():
        statuses.append(app.test_client().post(f"/api/tasks/{failed['id']}/retry").status_code)

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] + [409] * 7
    assert count_rows(Task, Task.retry_of == failed["id"]) == 1


def test_cancelled_task_is_retried_and_runs(client):
    task_id = submit(client, {"name": "create_user", "args": {"name": "late", "age": 3}, "delay": 3600})
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    retry = client.post(f"/api/tasks/{task_id}/retry").get_json()
    assert wait_status(client, retry["id"], "succeeded", "failed")["status"] == "succeeded"
    assert count_rows(User, User.name == "late") == 1


def test_bulk_retry_takes_the_list_filter_counts_first_and_skips_what_was_retried(client):
    cancelled = [submit(client, {"name": "noop", "delay": 3600}) for _ in range(3)]
    for task_id in cancelled:
        client.post(f"/api/tasks/{task_id}/cancel")
    failed = failed_task(client)["id"]
    dry = client.post("/api/tasks/retry", json={"status": "cancelled", "name": "noop",
                                                "dry_run": True})
    assert dry.get_json() == {"matched": 3, "affected": 0, "dry_run": True}
    assert count_rows(Task) == 4
    done = client.post("/api/tasks/retry", json={"status": "cancelled", "limit": 2}).get_json()
    assert done == {"matched": 3, "affected": 2, "dry_run": False}
    rest = client.post("/api/tasks/retry", json={}).get_json()  # failed and cancelled
    assert rest == {"matched": 2, "affected": 2, "dry_run": False}
    with db.session_scope() as session:
        retried_of = sorted(session.scalars(select(Task.retry_of).where(Task.retry_of.is_not(None))))
    assert retried_of == sorted(cancelled + [failed])
    assert client.post("/api/tasks/retry", json={"status": "succeeded"}).status_code == 422


def test_bulk_cancel_cancels_queued_and_asks_running_ones_to_stop(client):
    queued = [submit(client, {"name": "noop", "delay": 3600}) for _ in range(3)]
    other = submit(client, {"name": "create_user", "args": {"name": "x", "age": 1}, "delay": 3600})
    running = submit(client, {"name": "sleepy", "args": {"seconds": 60}})
    wait_status(client, running, "running")
    dry = client.post("/api/tasks/cancel", json={"name": "noop", "dry_run": True}).get_json()
    assert dry == {"matched": 3, "affected": 0, "dry_run": True}
    done = client.post("/api/tasks/cancel", json={"name": "noop"}).get_json()
    assert done == {"matched": 3, "affected": 3, "dry_run": False}
    assert all(client.get(f"/api/tasks/{i}").get_json()["status"] == "cancelled" for i in queued)
    assert client.get(f"/api/tasks/{other}").get_json()["status"] == "queued"
    assert client.post("/api/tasks/cancel", json={"status": "running"}).get_json()["affected"] == 1
    wait_status(client, running, "cancelled")
    assert client.post("/api/tasks/cancel", json={"status": "failed"}).status_code == 422


def test_stats_count_what_the_table_holds_and_list_the_runner(client):
    ok = submit(client, {"name": "noop"})
    failed_task(client)
    submit(client, {"name": "noop", "delay": 3600})
    wait_status(client, ok, "succeeded")
    wait_for(lambda: client.get("/api/stats").get_json()["runners"], message="the runner's record")
    body = client.get("/api/stats").get_json()
    assert body["statuses"] == {"queued": 1, "reserved": 0, "running": 0, "succeeded": 1, "failed": 1,
                                 "cancelled": 0}
    names = {row["name"]: row for row in body["names"]}
    assert names["noop"]["queued"] == 1 and names["noop"]["succeeded"] == 1
    assert names["fail_always"]["failed"] == 1
    assert body["queue"] == {"queued": 1, "due": 0, "oldest_due_age": None}
    assert len(body["finished_per_minute"]) == 60
    assert sum(m["succeeded"] + m["failed"] for m in body["finished_per_minute"]) == 2
    (runner,) = body["runners"]
    assert runner["workers"] == 4 and runner["lost"] is False


def test_a_bulk_action_without_a_body_is_refused_and_changes_nothing(client):
    queued = submit(client, {"name": "noop", "delay": 3600})
    for path in ("/api/tasks/cancel", "/api/tasks/retry"):
        response = client.post(path)
        assert response.status_code == 422
        assert "_schema" in response.get_json()["details"]["json"]
    assert client.get(f"/api/tasks/{queued}").get_json()["status"] == "queued"


def test_dry_run_takes_json_booleans_only(client):
    for value in (0, 1, "true", None):
        response = client.post("/api/tasks/cancel", json={"dry_run": value})
        assert response.status_code == 422, value
        assert "dry_run" in response.get_json()["details"]["json"]
