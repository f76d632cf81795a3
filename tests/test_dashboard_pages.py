"""The dashboard's pages and parts, rendered in process from the same data as the API."""
import datetime as dt
import re

import pytest
from flask import render_template
from sqlalchemy import update

import db
from db import tasks, workflow_views
from db.models import FINISHED_STATES, STATES, UNFINISHED_STATES, Task, Workflow, utcnow
from service.dashboard import chart, duration, safe_next, timings
from service.runner import chain, chord, enqueue, group, signature
from tests.conftest import wait_for
from tests.sample_tasks import FIXED, report_failure, step

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


# Workflows

def submit_workflow(client, root, **options):
    """Submit a workflow in a transaction of its own; return (its id, the tasks it started)."""
    client.get("/healthz")  # the app's runner starts on its first request
    with db.session_scope() as session:
        return enqueue(session, root, **options)


def settled(workflow_id, timeout=60):
    """The workflow (as workflow_views reads it) once it has ended and every task of it has finished."""
    def ended():
        with db.session_scope() as session:
            found = workflow_views.get_workflow(session, workflow_id)
        # The tasks as this one read saw them (a second query could see a later moment).
        unfinished = [task for task in tasks_in(found["tree"]) if task["status"] in UNFINISHED_STATES]
        return found if found["status"] != "running" and not unfinished else None
    return wait_for(ended, timeout=timeout, message=f"workflow {workflow_id} to end")


def tasks_in(step):
    """The task dicts of the steps under step that have started."""
    if step["kind"] == "task":
        return [step["task"]] if step["task"] else []
    below = step["steps"] + ([step["on_error"]] if step["on_error"] else [])
    return [task for child in below for task in tasks_in(child)]


def workflow_status(workflow_id):
    with db.session_scope() as session:
        return session.get(Workflow, workflow_id).status


def steps_shown(html):
    """Each step the page draws, by path: its kind, status, status word, role and task link (or None)."""
    shown = {}
    for item in html.split('<li class="step kind-')[1:]:
        kind, path, status = re.match(r'(\w+)" data-path="([^"]+)" data-status="(\w+)">', item).groups()
        head = re.split(r'<[ou]l class="steps|</li>', item)[0]  # the step itself, not the steps below it
        link = re.search(r'class="task-link" href="/dashboard/tasks/(\d+)">task \1<', head)
        role = re.search(r'<span class="role">([^<]+)<', head)
        shown[path] = {"kind": kind, "status": status, "head": head,
                       "word": re.search(r"data-step-status>([^<]+)<", head).group(1),
                       "role": role and role.group(1), "task": link and int(link.group(1))}
    return shown


def form_of(html, action):
    """The (action URL, fields) of the page's Cancel or Retry form, or None if it has none."""
    found = re.search(rf'<form method="post" action="([^"]+)" data-workflow-action="{action}"[^>]*>(.*?)</form>',
                      html, re.S)
    if found is None:
        return None
    return found.group(1), dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', found.group(2)))


@pytest.fixture
def fixed():
    """Values of failing steps to let succeed (a retried workflow's), cleared after the test."""
    yield FIXED
    FIXED.clear()


def test_the_workflow_list_counts_task_steps_newest_first_and_filters_by_status(client):
    ok, _ = submit_workflow(client, chain(step.s(value=1), step.s(value=2)))
    bad, _ = submit_workflow(client, group(step.s(value=3, fail=True), step.s(value=4)), cancel_on_failure=False)
    later, _ = submit_workflow(client, chain(signature("step", {"value": 5}, delay=3600), step.s(value=6)))
    settled(ok), settled(bad)
    part = client.get("/dashboard/workflows?part=1").get_data(as_text=True)
    assert re.findall(r'data-workflow-id="(\d+)"', part) == [str(later), str(bad), str(ok)]
    rows = {workflow_id: workflow_row_of(part, workflow_id) for workflow_id in (ok, bad, later)}
    assert f'href="/dashboard/workflows/{bad}">{bad}<' in rows[bad]
    assert 'status-failed">failed<' in rows[bad] and "1 of 2 succeeded" in rows[bad]
    assert 'data-count="failed"' in rows[bad] and ">1 failed<" in rows[bad]
    assert 'class="error-line"' in rows[bad] and "ValueError: step 3 failed" in rows[bad]
    assert "2 of 2 succeeded" in rows[ok] and "data-count" not in rows[ok] and "error-line" not in rows[ok]
    assert 'status-running">running<' in rows[later] and "0 of 2 succeeded" in rows[later]
    assert ">1 active<" in rows[later] and ">1 waiting<" in rows[later]
    assert TIME_TAG.search(rows[later]) and " ago</time>" in rows[later]
    failed = client.get("/dashboard/workflows?status=failed").get_data(as_text=True)
    assert re.findall(r'data-workflow-id="(\d+)"', failed) == [str(bad)]
    assert '<option value="failed" selected>' in failed and "1 workflow<" in failed
    assert 'aria-current="page">Workflows<' in failed
    refused = client.get("/dashboard/workflows?status=bogus")
    assert refused.status_code == 422 and "Bad filter" in refused.get_data(as_text=True)


def workflow_row_of(part, workflow_id):
    """The <tr> of one workflow in the list's HTML."""
    row = part[part.index(f'data-workflow-id="{workflow_id}"'):]
    return row[:row.index("</tr>")]


def test_the_workflow_page_draws_each_steps_status_task_and_the_error(client):
    root = chain(step.s(value=1), chord([step.s(value=2, fail=True), step.s(value=3, seconds=30)], step.s(value=10)),
                 on_error=report_failure.s())
    workflow_id, _ = submit_workflow(client, root)
    found = settled(workflow_id)
    tree = found["tree"]
    members = tree["steps"][1]["steps"][0]["steps"]
    failed_task = members[0]["task"]["id"]
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert re.search(r'id="workflow-status">failed<', page) and "data-final" in page
    assert "1 of 4 succeeded" in page and ">1 failed<" in page and ">1 cancelled<" in page
    assert ">1 not started<" in page  # the callback: its workflow ended, so it never will
    assert f'id="failed-task" href="/dashboard/tasks/{failed_task}">task {failed_task}<' in page
    assert re.search(r'<pre id="error" class="error">ValueError: step 2 failed</pre>', page)
    shown = steps_shown(page)
    assert {path: (step["kind"], step["status"], step["word"], step["role"]) for path, step in shown.items()} == {
        "chain": ("chain", "failed", "failed", None),
        "chain[0]": ("task", "succeeded", "succeeded", None),
        "chain[1]": ("chord", "failed", "failed", None),
        "chain[1].group": ("group", "failed", "failed", None),
        "chain[1].group[0]": ("task", "failed", "failed", None),
        "chain[1].group[1]": ("task", "cancelled", "cancelled", None),
        "chain[1].then": ("task", "waiting", "not started", "then"),
        "chain.on_error": ("task", "succeeded", "succeeded", "on error"),
    }
    assert shown["chain[0]"]["task"] == tree["steps"][0]["task"]["id"]
    assert "→ 1<" in shown["chain[0]"]["head"]  # its result
    assert shown["chain[1].group[0]"]["task"] == failed_task
    assert "ValueError: step 2 failed" in shown["chain[1].group[0]"]["head"]
    assert shown["chain[1].group[1]"]["task"] == members[1]["task"]["id"]
    assert shown["chain[1].then"]["task"] is None and "/dashboard/tasks/" not in shown["chain[1].then"]["head"]
    assert shown["chain.on_error"]["task"] == tree["on_error"]["task"]["id"]
    assert form_of(page, "retry") and form_of(page, "cancel") is None


def test_a_running_step_shows_its_tasks_progress_and_a_waiting_one_its_earlier_run(app):
    workflow = {"id": 3, "status": "running", "cancel_on_failure": True, "failed_task": None, "error": None,
                "created_at": utcnow(), "finished_at": None,
                "steps": {"waiting": 1, "active": 2, "succeeded": 0, "failed": 0, "cancelled": 0, "total": 3}}

    def task_step(path, status, task):
        return {"kind": "task", "path": path, "status": status, "name": "step", "args": {"value": 1},
                "options": {}, "task": task}

    def task(task_id, status):
        return {"id": task_id, "name": "step", "status": status, "progress": 40, "message": "halfway",
                "result": 7, "error": "ValueError: no", "attempts": 1, "started_at": None, "finished_at": None}

    workflow["tree"] = {"kind": "group", "path": "group", "status": "active", "on_error": None, "steps": [
        task_step("group[0]", "active", task(11, "running")), task_step("group[1]", "active", task(12, "queued")),
        task_step("group[2]", "waiting", task(13, "failed"))]}
    with app.test_request_context("/dashboard/workflows/3"):
        html = render_template("dashboard/workflow_part.html", workflow=workflow, workflow_id=3, unfinished=[11, 12],
                               now=utcnow())
    shown = steps_shown(html)
    running, queued, again = shown["group[0]"]["head"], shown["group[1]"]["head"], shown["group[2]"]["head"]
    assert "data-task-status>running<" in running and 'role="progressbar"' in running and "halfway" in running
    assert "data-task-status>queued<" in queued and "progressbar" not in queued
    assert shown["group[2]"]["word"] == "waiting" and shown["group[2]"]["task"] is None
    assert re.search(r'earlier run: <a href="/dashboard/tasks/13">task 13</a> failed', again)
    assert "ValueError" not in again and "→" not in again  # the earlier run's, not this step's
    assert "data-final" not in html and form_of(html, "cancel")


def test_cancel_from_the_workflow_page_cancels_it_and_its_running_task(client):
    workflow_id, [first] = submit_workflow(client, chain(step.s(value=1, seconds=30), step.s(value=2)))
    wait_for(lambda: client.get(f"/api/tasks/{first}").get_json()["status"] == "running", message="step 1 running")
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert "data-final" not in page and form_of(page, "retry") is None
    action, fields = form_of(page, "cancel")
    assert action == f"/api/workflows/{workflow_id}/cancel"
    assert client.post(action, data=fields).status_code == 200
    assert workflow_status(workflow_id) == "cancelled"
    found = settled(workflow_id)
    assert found["tree"]["steps"][0]["task"]["status"] == "cancelled"
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert re.search(r'id="workflow-status">cancelled<', page) and "data-final" in page
    assert form_of(page, "cancel") is None and form_of(page, "retry")
    assert steps_shown(page)["chain[1]"]["word"] == "not started"


def test_retry_from_the_workflow_page_reruns_what_failed(client, fixed):
    root = chain(step.s(value=1), step.s(value=2, fail=True), step.s(value=3))
    workflow_id, _ = submit_workflow(client, root)
    failed = settled(workflow_id)["tree"]["steps"][1]["task"]["id"]
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert re.search(r'id="workflow-status">failed<', page) and form_of(page, "cancel") is None
    fixed.add(2)
    action, fields = form_of(page, "retry")
    answer = client.post(action, data=fields)
    assert answer.status_code == 202 and len(answer.get_json()["tasks"]) == 1
    found = settled(workflow_id)
    assert workflow_status(workflow_id) == "succeeded"
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert re.search(r'id="workflow-status">succeeded<', page) and "3 of 3 succeeded" in page
    assert 'id="error"' not in page and 'id="failed-task"' not in page
    assert form_of(page, "cancel") is None and form_of(page, "retry") is None
    rerun = steps_shown(page)["chain[1]"]
    assert rerun["task"] == found["tree"]["steps"][1]["task"]["id"] != failed  # the new task
    assert rerun["word"] == "succeeded" and "→ 3<" in rerun["head"]


def test_a_refused_retry_says_why_while_a_task_of_it_still_runs(client):
    workflow_id, [_, slow] = submit_workflow(client, group(step.s(value=5, fail=True), step.s(value=6, seconds=30)),
                                             cancel_on_failure=False)
    wait_for(lambda: workflow_status(workflow_id) == "failed", message="the workflow to fail")
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    assert "data-final" not in page  # still live: a task of it runs on
    assert re.search(r'id="still-running">1 of its tasks not finished yet<', page)
    action, fields = form_of(page, "retry")
    refused = client.post(action, data=fields)
    assert refused.status_code == 409 and f"still has 1 unfinished task(s) ({slow})" in refused.get_json()["message"]
    assert client.post(f"/api/tasks/{slow}/cancel").status_code == 202
    settled(workflow_id)


def test_with_tokens_the_pages_forms_carry_the_sessions_csrf_token(make_app):
    client = make_app(API_TOKENS=["a-token"], SECRET_KEY="test-secret").test_client()
    form = client.get("/dashboard/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    client.post("/dashboard/signin", data={"token": "a-token", "csrf_token": csrf})
    workflow_id, _ = submit_workflow(client, chain(signature("step", {"value": 1}, delay=3600)))
    page = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    action, fields = form_of(page, "cancel")
    assert fields["csrf_token"] and fields["csrf_token"] == re.search(
        r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    assert client.post(action).status_code == 403  # the cookie alone does not do
    assert workflow_status(workflow_id) == "running"
    assert client.post(action, data=fields).status_code == 200
    assert workflow_status(workflow_id) == "cancelled"


def test_a_tasks_page_links_the_workflow_it_is_a_step_of(client):
    workflow_id, [first] = submit_workflow(client, chain(step.s(value=1), step.s(value=2)))
    settled(workflow_id)
    page = client.get(f"/dashboard/tasks/{first}").get_data(as_text=True)
    assert f'<a id="workflow-link" href="/dashboard/workflows/{workflow_id}">step of workflow {workflow_id}</a>' in page
    alone = client.post("/api/tasks", json={"name": "noop"}).get_json()["id"]
    assert 'id="workflow-link"' not in client.get(f"/dashboard/tasks/{alone}").get_data(as_text=True)


def test_an_unknown_workflow_is_a_404_page(client):
    for path in ("/dashboard/workflows/999999", "/dashboard/workflows/999999?part=1"):
        missing = client.get(path)
        html = missing.get_data(as_text=True)
        assert missing.status_code == 404 and "There is no workflow 999999." in html
        assert "data-live" not in html


def test_a_steps_arguments_and_result_are_escaped(client):
    payload = {"html": "<script>alert('x')</script>", "quote": '" onmouseover="alert(1)'}
    workflow_id, _ = submit_workflow(client, chain(report_failure.s(failure=payload)))
    assert settled(workflow_id)["status"] == "succeeded"
    for path in (f"/dashboard/workflows/{workflow_id}", "/dashboard/workflows"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and 'onmouseover="' not in html
    html = client.get(f"/dashboard/workflows/{workflow_id}").get_data(as_text=True)
    head = steps_shown(html)["chain[0]"]["head"]
    assert head.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 4  # arguments and result, text and title
    assert r"\&#34; onmouseover=\&#34;alert(1)" in head  # JSON's \" and then HTML's &#34;
