"""The dashboard as a person uses it: headless Chromium against a real gunicorn server."""
import pytest
from sqlalchemy import create_engine, update

from db import tasks
from db.models import FAILED, Task, utcnow
from db.session import session_factory
from tests.browser import browser, page, screenshot  # noqa: F401  fixtures
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
