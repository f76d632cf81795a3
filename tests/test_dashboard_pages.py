"""The dashboard's pages and parts, rendered in process from the same data as the API."""
import datetime as dt

import pytest

from db.models import Task, utcnow
from service.dashboard import chart, duration, safe_next, timings
from tests.conftest import wait_for


def test_root_redirects_to_the_dashboard_and_assets_are_served_by_the_app(client):
    assert client.get("/").headers["Location"] == "/dashboard"
    for asset in ("dashboard.js", "dashboard.css"):
        response = client.get(f"/dashboard/static/{asset}")
        assert response.status_code == 200
    page = client.get("/dashboard").get_data(as_text=True)
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere: works offline


def test_overview_counts_what_the_api_counts(client):
    client.post("/api/tasks", json={"name": "noop", "delay": 3600})
    done = client.post("/api/tasks", json={"name": "noop"}).get_json()["id"]
    wait_for(lambda: client.get(f"/api/tasks/{done}").get_json()["status"] == "succeeded",
             message="the task")
    stats = client.get("/api/stats").get_json()
    part = client.get("/dashboard?part=1").get_data(as_text=True)
    for status, n in stats["statuses"].items():
        assert f'data-status-count="{status}">{n}<' in part
    assert "<html" not in part  # a part, not the page
    assert "<svg" in part and 'class="bar-succeeded"' in part


def test_overview_lists_each_schedule_with_its_last_run_and_next_slot(client, monkeypatch):
    from service.runner import scheduler as scheduler_module
    from service.runner.scheduler import Scheduler
    from tests.test_schedules import recurring

    assert "No recurring tasks" in client.get("/dashboard?part=1").get_data(as_text=True)
    tasks = recurring(cron="0 3 * * *", args={"kind": "daily"})
    monkeypatch.setattr(scheduler_module, "registry", tasks)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    Scheduler(True, dt.timezone.utc, tasks).tick(now - dt.timedelta(days=1))
    Scheduler(True, dt.timezone.utc, tasks).tick(now)
    [listed] = client.get("/api/schedules").get_json()
    part = client.get("/dashboard?part=1").get_data(as_text=True)
    row = part[part.index('data-schedule="report"'):]
    row = row[:row.index("</tr>")]
    assert "<code>0 3 * * *</code> (UTC)" in row and "<code>{\"kind\": \"daily\"}</code>" in row
    assert f'href="/dashboard/tasks/{listed["last_task_id"]}"' in row and " ago</a>" in row


def test_task_list_filters_and_shows_progress_and_actions(client):
    waiting = client.post("/api/tasks", json={"name": "noop", "delay": 3600}).get_json()["id"]
    page = client.get("/dashboard/tasks?status=queued&name=noop").get_data(as_text=True)
    assert f'data-task-id="{waiting}"' in page
    assert f'data-action="cancel" data-task="{waiting}"' in page
    assert 'data-bulk="cancel" data-status="queued" data-name="noop"' in page
    assert 'data-bulk="retry"' not in page  # queued tasks cannot be retried
    empty = client.get("/dashboard/tasks?status=failed&part=1").get_data(as_text=True)
    assert "No task matches." in empty


def test_a_bad_filter_is_a_422_page_that_says_why(client):
    response = client.get("/dashboard/tasks?status=bogus")
    assert response.status_code == 422
    assert "Bad filter" in response.get_data(as_text=True)


def test_task_page_shows_timings_and_an_unknown_task_is_404(client):
    task_id = client.post("/api/tasks", json={"name": "noop"}).get_json()["id"]
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").get_json()["status"] == "succeeded",
             message="the task")
    page = client.get(f"/dashboard/tasks/{task_id}").get_data(as_text=True)
    assert 'id="waited"' in page and 'id="ran"' in page and "data-final" in page
    missing = client.get("/dashboard/tasks/999999")
    assert missing.status_code == 404 and "There is no task 999999" in missing.get_data(as_text=True)


def test_a_task_back_in_the_queue_shows_its_wait_so_far_and_no_run():
    now = utcnow()
    task = Task(status="queued", run_after=now - dt.timedelta(seconds=30),
                started_at=now - dt.timedelta(seconds=20), finished_at=None)  # an earlier attempt's start
    waited, ran = timings(task)
    assert waited == pytest.approx(30, abs=2) and ran is None


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3600, "1h"), (3723, "1h 2m"), (90061, "1d 1h"),
    (dt.timedelta(minutes=2), "2m"), (None, "–"), (-5, "0s")])
def test_durations_read_short(seconds, text):
    assert duration(seconds) == text


def test_chart_stacks_each_minutes_statuses_in_its_own_column():
    minute = dt.datetime(2026, 1, 1)
    drawn = chart([{"minute": minute, "succeeded": 3, "failed": 1, "cancelled": 0},
                   {"minute": minute, "succeeded": 0, "failed": 0, "cancelled": 0}])
    assert drawn["tallest"] == 4
    assert [(bar["x"], bar["status"]) for bar in drawn["bars"]] == [(0, "succeeded"), (0, "failed")]
    succeeded, failed = drawn["bars"]
    assert failed["y"] + failed["height"] == pytest.approx(succeeded["y"])


@pytest.mark.parametrize("target, expected", [
    ("/dashboard/tasks?status=failed", "/dashboard/tasks?status=failed"),
    ("https://evil.example/", "/dashboard"), ("//evil.example", "/dashboard"), (None, "/dashboard"),
    ("/api/tasks", "/dashboard")])
def test_after_sign_in_only_dashboard_paths_are_followed(app, target, expected):
    with app.test_request_context():
        assert safe_next(target) == expected
