"""The dashboard's pages and parts, rendered in process from the same data as the API."""
import datetime as dt
import re

import pytest
from flask import render_template
from sqlalchemy import update

import db
from db import tasks
from db.models import FINISHED_STATES, STATES, Task, utcnow
from service.dashboard import chart, duration, safe_next, timings
from tests.conftest import wait_for

TIME_TAG = re.compile(r'<time datetime="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)" '
                      r'title="(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)"')


def add_task(name, args, **values):
    """A task row as some state left it, written directly: no runner has to take it there."""
    with db.session_scope() as session:
        task_id = tasks.insert_task(session, name, args).id
        if values:
            session.execute(update(Task).where(Task.id == task_id).values(**values))
    return task_id


def a_task(status, **values):
    """A Task object (not in any database) in status, as the runner leaves it there."""
    now = utcnow()
    started = None if status == "reserved" else now - dt.timedelta(seconds=20)  # queued: an earlier attempt's
    fields = dict(id=7, name="create_user", args={"name": "seven", "age": 7}, status=status, progress=0,
                  message=None, error=None, traceback=None, result=None, attempts=1, max_attempts=3,
                  time_limit=None, cancel_requested=False, owner=None, heartbeat_at=None,
                  run_after=now - dt.timedelta(seconds=30), created_at=now - dt.timedelta(seconds=30),
                  started_at=started, finished_at=now if status in FINISHED_STATES else None,
                  priority=0, queue="default", retry_of=None, retried_by=None)
    return Task(**{**fields, **values})


def render_list(app, *items):
    """The task list's live part for these tasks."""
    with app.test_request_context("/dashboard/tasks"):
        return render_template("dashboard/tasks_part.html", items=items, total=len(items),
                               query={"page": 1}, pages=1, error=None, now=utcnow())


def render_task(app, task):
    """A task page's live part for this task."""
    with app.test_request_context(f"/dashboard/tasks/{task.id}"):
        return render_template("dashboard/task_part.html", task=task, task_id=task.id,
                               timings=timings(task), now=utcnow())


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
    assert f'href="/dashboard/tasks/{listed["last_task_id"]}"' in row and " ago</time></a>" in row


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


def test_task_list_rows_tell_apart_tasks_of_one_name_by_arguments_and_error(client):
    long_name = "x" * 300
    first = add_task("create_user", {"name": "ada", "age": 36}, status="failed", attempts=3,
                     error="IntegrityError: duplicate entry 'ada'\n[SQL: INSERT INTO as_user ...]",
                     finished_at=utcnow())
    second = add_task("create_user", {"name": "bob", "age": 41}, status="failed", attempts=3,
                      error="OperationalError: database is locked", finished_at=utcnow())
    long = add_task("create_user", {"name": long_name, "age": 1}, status="queued",
                    run_after=utcnow() + dt.timedelta(hours=1))
    part = client.get("/dashboard/tasks?part=1").get_data(as_text=True)
    rows = {task_id: row_of(part, task_id) for task_id in (first, second, long)}
    assert '{&#34;name&#34;:&#34;ada&#34;,&#34;age&#34;:36}' in rows[first]  # compact JSON
    assert "IntegrityError: duplicate entry &#39;ada&#39;" in rows[first]
    assert "[SQL:" not in rows[first]  # the first line only: the task's page has the rest
    assert "OperationalError: database is locked" in rows[second] and "ada" not in rows[second]
    shown = re.search(r'<code class="args" title="([^"]*)">([^<]*)</code>', rows[long])
    assert long_name in shown.group(1)  # all of it on hover
    assert shown.group(2).endswith("…") and len(shown.group(2)) < 100
    assert 'class="error-line"' not in rows[long]


def row_of(part, task_id):
    """The <tr> of one task in the list's HTML."""
    row = part[part.index(f'data-task-id="{task_id}"'):]
    return row[:row.index("</tr>")]


def test_times_are_utc_time_elements_that_the_browser_makes_local(client):
    task_id = add_task("create_user", {"name": "timed", "age": 1}, status="failed",
                       started_at=utcnow(), finished_at=utcnow(), error="ValueError: no")
    page = client.get(f"/dashboard/tasks/{task_id}").get_data(as_text=True)
    tags = TIME_TAG.findall(page)
    assert len(tags) >= 4  # created, due, started, finished
    for iso, title in tags:
        assert dt.datetime.fromisoformat(iso.rstrip("Z")).strftime("%Y-%m-%d %H:%M:%S UTC") == title
    assert page.count('data-local="datetime"') == len(tags)
    row = row_of(client.get("/dashboard/tasks?part=1").get_data(as_text=True), task_id)
    assert TIME_TAG.search(row) and " ago</time>" in row  # "created 3s ago", UTC on hover


def test_chart_has_a_time_axis_labelled_every_ten_minutes():
    first = dt.datetime(2026, 1, 1, 8, 57)
    drawn = chart([{"minute": first + dt.timedelta(minutes=n), "succeeded": 0, "failed": 0,
                    "cancelled": 0} for n in range(60)])
    assert [tick["minute"].strftime("%H:%M") for tick in drawn["ticks"]] == [
        "09:00", "09:10", "09:20", "09:30", "09:40", "09:50"]
    assert [tick["x"] for tick in drawn["ticks"]] == [30, 130, 230, 330, 430, 530]


def test_overview_chart_labels_its_minutes_for_the_browser_to_make_local(client):
    part = client.get("/dashboard?part=1").get_data(as_text=True)
    labels = re.findall(r'<text class="tick"[^>]* data-datetime="([^"]+)" data-local="hm">(\d\d:\d\d)</text>',
                        part)
    assert len(labels) == 6
    for iso, text in labels:
        assert iso.endswith(":00Z") and iso[11:16] == text


def test_pages_link_an_icon_so_browsers_do_not_ask_for_favicon_ico(client):
    for path in ("/dashboard", "/dashboard/tasks", "/dashboard/submit", "/docs"):
        page = client.get(path).get_data(as_text=True)
        icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
        assert icon, path
        served = client.get(icon.group(1))
        assert served.status_code == 200 and served.mimetype == "image/svg+xml"
    legacy = client.get("/favicon.ico")  # a client that asks anyway is sent there, not a 404
    assert legacy.status_code == 301 and legacy.headers["Location"] == icon.group(1)


@pytest.mark.parametrize("status", STATES)
def test_only_a_running_task_shows_a_live_estimate(app, status):
    task = a_task(status, progress=9, message="working, 136s left")
    row, page = render_list(app, task), render_task(app, task)
    for html in (row, page):
        assert ("136s left" in html) == (status == "running"), html
        assert ("9%" in html) == (status in ("running", "failed", "cancelled"))
    ran = re.search(r'id="ran">([^<]*)<', page).group(1)
    assert ran.endswith("so far") == (status == "running")
    if status in ("failed", "cancelled"):
        assert "stopped at 9%" in row and "stopped at 9%" in page
    if status == "succeeded":
        assert 'aria-valuenow="100"' in row


@pytest.mark.parametrize("status", STATES)
def test_every_unfinished_task_can_be_cancelled_and_every_state_has_a_badge(app, client, status):
    task = a_task(status)
    for html in (render_list(app, task), render_task(app, task)):
        assert ('data-action="cancel"' in html) == (status not in FINISHED_STATES)
        assert re.search(f'class="badge status-{status}"[^>]*>{status}<', html)
    css = client.get("/dashboard/static/dashboard.css").get_data(as_text=True)
    assert f".status-{status} {{ color:" in css


def test_a_filter_on_an_unfinished_state_offers_to_cancel_all_of_it(client):
    for status in STATES:
        page = client.get(f"/dashboard/tasks?status={status}").get_data(as_text=True)
        options = re.findall(r'<option value="(\w+)"', page[:page.index('name="name"')])
        assert options == list(STATES)  # the filter lists every state there is
        assert ('data-bulk="cancel"' in page) == (status not in FINISHED_STATES)
