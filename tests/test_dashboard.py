"""The dashboard as a person uses it: headless Chromium against a real gunicorn server."""
import datetime as dt

import pytest
from sqlalchemy import create_engine, update

from db import tasks
from db.models import FAILED, Task, utcnow
from db.session import session_factory
from tests.browser import browser, new_page, page, screenshot  # noqa: F401  fixtures
from tests.conftest import wait_for
from tests.server import Server, migrate

pytestmark = pytest.mark.slow

FAST = dict(TASK_POLL_INTERVAL=0.1, TASK_HEARTBEAT=0.5, TASK_SHUTDOWN_GRACE=2, SEED_SYNC_DELAY=0)


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


@pytest.fixture
def server(migrated_db, tmp_path):
    server = Server(migrated_db, tmp_path / "server.log", **FAST).start()
    yield server
    server.stop()


def add_failed(db_url, count, name_prefix="again"):
    """create_user tasks that failed (as if their database had been down): rows, directly."""
    engine = create_engine(db_url)
    ids = []
    with session_factory(bind=engine) as session:
        for n in range(count):
            task = tasks.insert_task(session, "create_user", {"name": f"{name_prefix}{n}", "age": 5,
                                                              "delay": 0.0})
            ids.append(task.id)
        session.execute(update(Task).where(Task.id.in_(ids)).values(
            status=FAILED, attempts=3, error="OperationalError: database is locked",
            finished_at=utcnow()))
        session.commit()
    engine.dispose()
    return ids


def add_task(db_url, name, args, **values):
    """One task row as some state left it, written directly; returns its id."""
    engine = create_engine(db_url)
    with session_factory(bind=engine) as session:
        task_id = tasks.insert_task(session, name, args).id
        if values:
            session.execute(update(Task).where(Task.id == task_id).values(**values))
        session.commit()
    engine.dispose()
    return task_id


def api_task(server, task_id):
    return server.request("GET", f"/api/tasks/{task_id}")[2]


def test_submit_from_the_form_and_watch_it_move_without_a_reload(server, page):
    page.goto(server.base + "/")
    assert page.url.endswith("/dashboard")
    screenshot(page, "overview-empty")
    page.click("nav >> text=Submit")
    page.select_option("#field-name", "create_user")
    page.fill("#field-args", '{"name": "watched", "age": 41, "delay": 3}')
    page.click("#submit-button")
    page.wait_for_url("**/dashboard/tasks/*")
    page.evaluate("window.stillTheSamePage = true")
    widths = set()

    def succeeded():
        bar = page.query_selector("#task .progress span")
        if bar is not None:
            widths.add(bar.evaluate("element => element.style.width"))
        return page.inner_text("#task-status") == "succeeded"

    wait_for(succeeded, timeout=30, interval=0.05, message="the task to show succeeded")
    assert page.evaluate("window.stillTheSamePage") is True  # updated live, not reloaded
    running_widths = widths - {"100%"}
    assert len(running_widths) >= 2, widths
    assert "watched" in page.inner_text("#args")
    screenshot(page, "task-succeeded")


def test_submit_form_shows_validation_errors_next_to_the_field(server, page):
    page.goto(server.base + "/dashboard/submit")
    page.select_option("#field-name", "create_user")
    page.fill("#field-args", '{"name": "", "age": "old"}')
    page.click("#submit-button")
    error = page.locator('[data-error-for="args"]')
    error.wait_for()
    wait_for(lambda: "age" in error.inner_text() and "name" in error.inner_text(),
             message="the field errors under the arguments")
    page.fill("#field-args", "{not json")
    page.click("#submit-button")
    wait_for(lambda: "Not valid JSON" in error.inner_text(), message="the JSON error")
    assert page.url.endswith("/dashboard/submit")
    assert server.request("GET", "/api/tasks")[2] == []
    screenshot(page, "submit-errors")


def test_cancel_a_running_task_from_the_list(server, page):
    status, _, task = server.request("POST", "/api/tasks", {
        "name": "create_user", "args": {"name": "slow", "age": 1, "delay": 120}})
    assert status == 202
    wait_for(lambda: api_task(server, task["id"])["status"] == "running", message="it to run")
    page.goto(server.base + "/dashboard/tasks")
    row = page.locator(f'tr[data-task-id="{task["id"]}"]')
    wait_for(lambda: row.get_attribute("data-status") == "running", message="the row to show running")
    row.locator('[data-action="cancel"]').click()
    wait_for(lambda: row.get_attribute("data-status") == "cancelled", message="the row to show cancelled")
    assert api_task(server, task["id"])["status"] == "cancelled"
    assert "asked to stop" in page.inner_text("#notice")


def test_retry_a_failed_task_and_see_it_succeed(server, page, migrated_db):
    (failed,) = add_failed(migrated_db, 1, "retried")
    page.goto(f"{server.base}/dashboard/tasks/{failed}")
    assert page.inner_text("#task-status") == "failed"
    assert "database is locked" in page.inner_text("#error")
    page.click('[data-action="retry"]')
    notice = page.locator("#notice")
    wait_for(lambda: "retried as task" in notice.inner_text(), message="the retry notice")
    retry_id = int(notice.inner_text().rsplit(" ", 1)[1].rstrip("."))
    page.goto(f"{server.base}/dashboard/tasks/{retry_id}")
    wait_for(lambda: page.inner_text("#task-status") == "succeeded", message="the retry to succeed")
    assert f"task {failed}" in page.inner_text("dl.fields")  # retry of
    assert api_task(server, failed)["retried_by"] == retry_id


def test_bulk_retry_of_the_failed_filter_says_how_many_first(server, page, migrated_db):
    failed = add_failed(migrated_db, 3, "bulk")
    page.goto(server.base + "/dashboard/tasks?status=failed")
    page.click('[data-bulk="retry"]')
    dialog = page.locator("#confirm")
    dialog.wait_for(state="visible")
    assert page.inner_text("#confirm-text") == "Retry 3 tasks that are failed?"
    screenshot(page, "bulk-retry-confirm")
    page.click("#confirm-yes")
    wait_for(lambda: "Retried 3 of 3" in page.inner_text("#notice"), message="the bulk notice")
    retries = [api_task(server, task_id)["retried_by"] for task_id in failed]
    assert all(retries)
    wait_for(lambda: all(api_task(server, r)["status"] == "succeeded" for r in retries),
             message="the three retries to succeed")
    page.goto(server.base + "/dashboard")
    wait_for(lambda: page.inner_text('[data-status-count="succeeded"]') == "3",
             message="the overview to count them")
    screenshot(page, "overview")


def test_pause_a_queue_from_the_overview_and_resume_it(server, page):
    page.goto(server.base + "/dashboard")
    page.click('#queues [data-queue-action="pause"][data-queue-name="default"]')
    page.wait_for_selector("#notice.ok")
    assert "paused" in page.inner_text("#notice")
    status, _, created = server.request("POST", "/api/tasks", {"name": "create_user",
                                                                "args": {"name": "held", "age": 1}})
    assert status == 202
    wait_for(lambda: "1" in page.inner_text('#queues tr[data-queue="default"] td:nth-child(2)'),
             timeout=10, message="the overview to count the held task")
    assert page.get_attribute('#queues tr[data-queue="default"]', "class") == "paused"
    assert api_task(server, created["id"])["status"] == "queued"
    page.click('#queues [data-queue-action="resume"][data-queue-name="default"]')
    wait_for(lambda: api_task(server, created["id"])["status"] == "succeeded", timeout=15,
             message="the task to run once its queue resumed")
    queues = server.request("GET", "/api/queues")[2]
    assert [(q["name"], q["paused"]) for q in queues] == [("default", False)]


@pytest.fixture
def guarded_server(migrated_db, tmp_path):
    server = Server(migrated_db, tmp_path / "guarded.log", API_TOKENS="right-token,other",
                    SECRET_KEY="browser-test-secret", **FAST).start()
    yield server
    server.stop()


def test_with_tokens_a_stranger_signs_in_and_a_wrong_token_is_refused(guarded_server, page):
    page.goto(guarded_server.base + "/")
    assert "/dashboard/signin" in page.url
    page.fill("#token", "wrong-token")
    page.click("#signin-button")
    assert "not valid" in page.inner_text("#signin-error")
    screenshot(page, "signin-refused")
    page.fill("#token", "right-token")
    page.click("#signin-button")
    page.wait_for_url("**/dashboard")
    assert page.inner_text("h1") == "Overview"
    # Signed in, the page's own calls to the API work (cookie plus CSRF token).
    page.click("nav >> text=Submit")
    page.fill("#field-args", '{"name": "signed", "age": 30}')
    page.click("#submit-button")
    page.wait_for_url("**/dashboard/tasks/*")
    wait_for(lambda: page.inner_text("#task-status") == "succeeded", message="the signed-in submit")
    assert guarded_server.request("GET", "/api/tasks")[0] == 401  # and the API is still closed


# A zone no test machine runs in, half an hour off every whole-hour zone: a time left in UTC shows.
ZONE, OFFSET = "Asia/Kolkata", dt.timezone(dt.timedelta(hours=5, minutes=30))


def local(iso, layout):
    """What the browser in ZONE should show for a UTC ISO time."""
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(OFFSET).strftime(layout)


def after_a_refresh(page, selector):
    """Wait until the live part re-rendered the element under selector (a new element took its place)."""
    page.eval_on_selector(selector, "element => { element.dataset.old = '1'; }")
    wait_for(lambda: page.eval_on_selector(selector, "element => !element.dataset.old"),
             timeout=10, message=f"a refresh of {selector}")


def test_times_read_in_the_browsers_zone_with_utc_on_hover_also_after_a_refresh(server, new_page):
    page = new_page(timezone_id=ZONE)
    status, _, task = server.request("POST", "/api/tasks", {
        "name": "create_user", "args": {"name": "later", "age": 1}, "delay": 3600})
    assert status == 202
    page.goto(f"{server.base}/dashboard/tasks/{task['id']}")  # queued: its part is polled

    def shown_locally():
        # One read of them all: the part may be re-rendered between two calls.
        times = page.eval_on_selector_all("#task time[data-local]", """elements => elements.map(
            element => [element.getAttribute("datetime"), element.textContent, element.title])""")
        assert len(times) >= 2  # created and due (not started, not finished)
        for iso, text, title in times:
            assert text == local(iso, "%Y-%m-%d %H:%M:%S")
            assert title == iso[:10] + " " + iso[11:19] + " UTC"

    shown_locally()
    after_a_refresh(page, "#task time")
    shown_locally()
    page.goto(f"{server.base}/dashboard/tasks")
    created = page.locator(f'tr[data-task-id="{task["id"]}"] time')
    assert created.inner_text().endswith(" ago") and created.get_attribute("title").endswith(" UTC")


def test_the_throughput_chart_has_a_time_axis_in_local_time(server, new_page):
    page = new_page(timezone_id=ZONE)
    page.goto(server.base + "/dashboard")

    def labelled_locally():
        # One read of them all: the part may be re-rendered between two calls.
        ticks = page.eval_on_selector_all("svg.chart text.tick", """elements => elements.map(
            element => [element.dataset.datetime, element.textContent, element.getBoundingClientRect().x])""")
        assert len(ticks) == 6  # an hour, a label every ten minutes
        for iso, text, _ in ticks:
            assert text == local(iso, "%H:%M")
        lefts = [left for _, _, left in ticks]
        assert lefts == sorted(lefts)  # along the x axis, oldest first
        chart = page.locator("svg.chart").bounding_box()
        assert all(chart["x"] <= x < chart["x"] + chart["width"] for x in lefts)

    labelled_locally()
    after_a_refresh(page, "svg.chart text.tick")
    labelled_locally()
    screenshot(page, "overview-axis")


def test_the_browser_gets_the_icon_and_never_asks_for_favicon_ico(migrated_db, tmp_path, page):
    # At DEBUG the server logs a line for each request it answers.
    server = Server(migrated_db, tmp_path / "icon.log", LOG_LEVEL="DEBUG", **FAST).start()
    try:
        for path in ("/dashboard", "/dashboard/tasks", "/docs"):
            page.goto(server.base + path)
            page.wait_for_load_state("networkidle")
        wait_for(lambda: "GET /dashboard/static/favicon.svg 200" in server.output(), timeout=15,
                 message="Chromium to fetch the icon the pages link")
    finally:
        server.stop()
    assert "/favicon.ico" not in server.output()


def add_long_tasks(db_url):
    """Tasks whose arguments and errors are long, without a space to break a line at."""
    ids = []
    for n in range(3):
        ids.append(add_task(db_url, "create_user", {"name": f"user-{n}-" + "x" * 90, "age": 30 + n,
                                                     "note": "y" * 400},
                            status=FAILED, attempts=3, finished_at=utcnow(),
                            error=f"IntegrityError: (1062, \"Duplicate entry 'user-{n}-{'x' * 150}'\")"))
    ids.append(add_task(db_url, "create_user", {"name": "later", "age": 1},
                        run_after=utcnow() + dt.timedelta(hours=1)))
    return ids


def test_the_task_list_fits_a_phone_and_a_desktop(server, new_page, migrated_db):
    ids = add_long_tasks(migrated_db)
    for width, height, name in ((390, 844, "tasks-390"), (1200, 900, "tasks-desktop")):
        page = new_page(width, height)
        page.goto(server.base + "/dashboard/tasks")
        page.locator(f'tr[data-task-id="{ids[0]}"]').wait_for()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width
        assert page.locator(f'tr[data-task-id="{ids[0]}"] .error-line').is_visible()
        after_a_refresh(page, f'tr[data-task-id="{ids[0]}"]')  # still so once the list re-rendered
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width
        assert page.locator('[data-action="retry"]').first.is_visible()
        screenshot(page, name)


@pytest.fixture
def step_server(migrated_db, tmp_path):
    """A server that also runs the tests' tasks (the workflow step task among them)."""
    server = Server(migrated_db, tmp_path / "steps.log", TASK_MODULES="tests.sample_tasks", **FAST).start()
    yield server
    server.stop()


def step(value, **args):
    return {"name": "step", "args": {"value": value, **args}}


def submit_workflow(server, tree):
    status, _, body = server.request("POST", "/api/workflows", tree)
    assert status == 202, body
    return body


def step_statuses(page):
    """{path: status} of every step the workflow page draws, read at once (the part re-renders)."""
    return dict(page.eval_on_selector_all("#tree li.step", """elements => elements.map(
        element => [element.dataset.path, element.dataset.status])"""))


def test_a_workflows_tree_renders_and_follows_it_live_to_succeeded(step_server, page):
    server = step_server
    workflow = submit_workflow(server, {"chain": [step(1, seconds=1.5), {"group": [step(2, seconds=0.5), step(3)]},
                                                  step(4)]})
    page.goto(server.base + "/dashboard/workflows")
    page.click(f'tr[data-workflow-id="{workflow["id"]}"] a')
    page.wait_for_url(f"**/dashboard/workflows/{workflow['id']}")
    page.evaluate("window.stillTheSamePage = true")
    seen = []

    def succeeded():
        statuses = step_statuses(page)
        seen.append(statuses)
        return page.inner_text("#workflow-status") == "succeeded" and set(statuses.values()) == {"succeeded"}

    wait_for(succeeded, timeout=30, interval=0.05, message="the page to show every step succeeded")
    assert page.evaluate("window.stillTheSamePage") is True  # updated live, not reloaded
    assert list(seen[-1]) == ["chain", "chain[0]", "chain[1]", "chain[1][0]", "chain[1][1]", "chain[2]"]
    assert seen[0]["chain[0]"] == "active" and seen[0]["chain[2]"] == "waiting"  # drawn before it ended
    assert page.inner_text("#workflow .step-counts") == "4 of 4 succeeded"
    links = page.eval_on_selector_all("#tree a.task-link", "elements => elements.map(e => e.textContent)")
    assert len(links) == 4
    # 4 + (2 + 1) + (3 + 1): each member of the group got step 1's result
    assert page.inner_text('#tree li[data-path="chain[2]"] .result') == "→ 11"
    screenshot(page, "workflow-succeeded")


def test_cancel_and_retry_a_workflow_from_its_page_which_says_when_it_cannot(step_server, page):
    server = step_server
    workflow = submit_workflow(server, {"chain": [step(1, seconds=60), step(2)]})
    page.goto(f"{server.base}/dashboard/workflows/{workflow['id']}")
    first = page.get_attribute('#tree li[data-path="chain[0]"] a.task-link', "href")
    page.click('form[data-workflow-action="cancel"] button')
    wait_for(lambda: page.inner_text("#notice") == f"Workflow {workflow['id']} cancelled.", message="the notice")
    wait_for(lambda: page.query_selector("#workflow [data-final]"), message="its running task to stop")
    assert page.inner_text("#workflow-status") == "cancelled"
    assert step_statuses(page) == {"chain": "cancelled", "chain[0]": "cancelled", "chain[1]": "waiting"}
    page.click('form[data-workflow-action="retry"] button')
    wait_for(lambda: "runs again: 1 task started" in page.inner_text("#notice"), message="the retry notice")
    # The ended page had stopped polling; running again, it polls again (the cancel below shows it).
    wait_for(lambda: page.get_attribute('#tree li[data-path="chain[0]"] a.task-link', "href") not in (None, first),
             message="the step's new task")
    assert page.inner_text("#workflow-status") == "running"
    screenshot(page, "workflow-running-again")
    assert server.request("POST", f"/api/workflows/{workflow['id']}/cancel")[0] == 200  # not from this page
    wait_for(lambda: page.inner_text("#workflow-status") == "cancelled", message="the page to follow it")

    refused = submit_workflow(server, {"group": [step(5, fail=True), step(6, seconds=60)],
                                       "cancel_on_failure": False})
    page.goto(f"{server.base}/dashboard/workflows/{refused['id']}")
    wait_for(lambda: page.inner_text("#workflow-status") == "failed", message="the workflow to fail")
    page.click('form[data-workflow-action="retry"] button')
    notice = page.locator("#notice.error")
    notice.wait_for()
    assert notice.inner_text() == (f"Could not retry workflow {refused['id']}: workflow {refused['id']} still has 1 "
                                   f"unfinished task(s) ({refused['tasks'][1]}); retry it once they have stopped")
    screenshot(page, "workflow-retry-refused")
