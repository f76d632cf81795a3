"""Prometheus metrics: in process, under gunicorn with two workers, and on the worker's own port."""
import urllib.request

import pytest

from db.models import Task
from tests.conftest import count_rows, grown, samples, scrape, wait_for
from tests.server import Server, Worker, free_port, migrate


def total(text, name):
    return sum(samples(text, name).values())


def test_task_counters_histograms_and_table_gauges(client):
    before = scrape(client)
    ok = client.post("/api/tasks", json={"name": "noop"}).get_json()["id"]
    bad = client.post("/api/tasks", json={"name": "fail_always"}).get_json()["id"]
    later = client.post("/api/tasks", json={"name": "noop", "delay": 3600}).get_json()["id"]
    wait_for(lambda: count_rows(Task, Task.status.in_(("succeeded", "failed"))) == 2, message="2 done")
    client.post(f"/api/tasks/{later}/cancel")
    again = client.post(f"/api/tasks/{bad}/retry").get_json()["id"]
    client.post("/api/tasks", json={"name": "noop", "delay": 3600})
    wait_for(lambda: count_rows(Task, Task.id == again, Task.status == "failed") == 1, message="the retry done")
    # The workers gauge is set each poll interval: wait for the tick after the retry ended.
    wait_for(lambda: samples(scrape(client), "task_workers") == {'{state="busy"}': 0.0, '{state="idle"}': 4.0},
             message="the workers gauge to show all idle")
    text = scrape(client)
    assert grown(before, text, "tasks_submitted_total") == {'{name="noop"}': 3.0,
                                                            '{name="fail_always"}': 2.0}
    assert grown(before, text, "tasks_succeeded_total") == {'{name="noop"}': 1.0}
    assert grown(before, text, "tasks_cancelled_total") == {'{name="noop"}': 1.0}
    assert grown(before, text, "tasks_retried_total") == {'{name="fail_always"}': 1.0}
    assert grown(before, text, "tasks_failed_total")['{name="fail_always"}'] >= 1.0
    assert grown(before, text, "task_run_seconds_count")['{name="noop"}'] == 1.0
    assert grown(before, text, "task_queue_wait_seconds_count")['{name="noop"}'] >= 1.0
    assert samples(text, "tasks_queued")['{name="noop"}'] == 1.0  # read from the table
    assert ok


def test_http_requests_are_counted_by_route_and_status(client):
    before = scrape(client)
    client.get("/api/tasks/12345")
    client.get("/api/tasks/12345")
    client.get("/no/such/page")
    text = scrape(client)
    requests = grown(before, text, "http_requests_total")
    assert requests['{method="GET",route="/api/tasks/<id:task_id>",status="404"}'] == 2.0
    assert requests['{method="GET",route="<unmatched>",status="404"}'] == 1.0
    assert total(text, "http_request_duration_seconds_count") - total(
        before, "http_request_duration_seconds_count") >= 3


def test_metrics_need_a_token_when_tokens_are_set(make_app):
    client = make_app(API_TOKENS=["scraper"], SECRET_KEY="k").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scraper"}).status_code == 200


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


@pytest.mark.slow
def test_two_gunicorn_workers_report_every_task_once(migrated_db, tmp_path):
    server = Server(migrated_db, tmp_path / "server.log", WEB_WORKERS=2, TASK_WORKERS=2,
                    TASK_POLL_INTERVAL=0.05, LOG_LEVEL="WARNING").start()
    try:
        for i in range(200):
            status, _, _ = server.request("POST", "/api/tasks", {
                "name": "create_user", "args": {"name": f"m{i}", "age": 1}})
            assert status == 202
        wait_for(lambda: server.request("GET", "/api/stats")[2]["statuses"]["succeeded"] == 200,
                 timeout=60, message="200 tasks to succeed")
        workers = {int(pid) for pid in server.pids()[1:]}

        def succeeded_in_scrape():
            with urllib.request.urlopen(server.base + "/metrics", timeout=10) as response:
                text = response.read().decode()
            return total(text, "tasks_succeeded_total") == 200 and text
        text = wait_for(succeeded_in_scrape, timeout=10, message="the scrape to count 200")
        assert total(text, "tasks_submitted_total") == 200
        busy_pids = {key.split('pid="')[1].split('"')[0] for key in samples(text, "task_workers")}
        assert {str(pid) for pid in workers} == busy_pids  # each live worker reports its threads
        assert samples(text, "tasks_running") == {}
    finally:
        server.stop()
    assert server.proc.returncode == 0


@pytest.mark.slow
def test_make_worker_serves_metrics_on_its_own_port_behind_the_token(migrated_db, tmp_path):
    port = free_port()
    worker = Worker(migrated_db, tmp_path / "worker.log", METRICS_PORT=port, TASK_WORKERS=1,
                    TASK_POLL_INTERVAL=0.05, API_TOKENS="scrape-token", SECRET_KEY="k").start()
    server = Server(migrated_db, tmp_path / "web.log", TASK_WORKERS=0).start()
    try:
        assert server.request("POST", "/api/tasks", {"name": "create_user",
                                                     "args": {"name": "w", "age": 1}})[0] == 202

        def scrape_worker(token):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                             headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, ""
            except OSError:
                return None, ""

        text = wait_for(lambda: (answer := scrape_worker("scrape-token"))[0] == 200
                        and total(answer[1], "tasks_succeeded_total") == 1 and answer[1],
                        message="the worker to report the task")
        assert total(text, "task_queue_wait_seconds_count") == 1
        assert scrape_worker("wrong")[0] == 401
    finally:
        server.stop()
        worker.stop()
