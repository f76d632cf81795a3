"""The service as users run it: a real gunicorn process."""
import threading
import urllib.request

import pytest

from tests.conftest import wait_for
from tests.server import Server, migrate
from tests.test_metrics import total

pytestmark = pytest.mark.slow


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


@pytest.fixture
def server(migrated_db, tmp_path):
    server = Server(migrated_db, tmp_path / "server.log", ALLOW_DB_RESET="true",
                    SEED_SYNC_DELAY=0.2, SEED_TASK_DELAY=0.2, TASK_POLL_INTERVAL=0.1).start()
    yield server
    server.stop()


def test_article_flow_on_gunicorn(server):
    assert server.request("GET", "/user/initdb")[2] == "success"
    status, _, user_id = server.request("GET", "/user/add")
    assert (status, user_id) == (200, 1)
    locations = []
    for route in ("/user/thread_pool", "/user/thread"):
        status, headers, body = server.request("GET", route)
        assert (status, body) == (200, "success")
        locations.append(headers["Location"])

    def finished():
        found = [server.request("GET", location)[2] for location in locations]
        return all(t["status"] == "succeeded" for t in found) and found

    tasks = wait_for(finished, message="both article tasks")
    assert {t["args"]["name"] for t in tasks} == {"thread pool", "thread"}
    users = server.request("GET", "/api/users")[2]
    # The two tasks run side by side, as the article's threads do: either may insert first.
    assert sorted((u["id"], u["name"], u["age"]) for u in users)[0] == (1, "zhangsan", 12)
    assert sorted((u["name"], u["age"]) for u in users) == [
        ("thread", 12), ("thread pool", 12), ("zhangsan", 12)]
    assert sorted(u["id"] for u in users) == [1, 2, 3]


def test_a_worker_is_warm_before_its_first_request(server):
    status, _, ready = server.request("GET", "/readyz")
    assert status == 200
    pool = ready["pool"]
    # Every connection the process will need is open already (a cold pool holds the
    # one or two the runner and this request opened); one more may be open in overflow
    # while the runner's threads and this request hold theirs.
    assert pool["size"] == 8 + 4 + 2
    assert pool["idle"] + pool["checked_out"] >= pool["size"]


def test_the_machines_default_layout_serves_and_runs_tasks(migrated_db, tmp_path):
    from service.config import available_cpus, default_layout

    web, threads, task_processes, task_workers = default_layout(available_cpus(), migrated_db)
    server = Server(migrated_db, tmp_path / "defaults.log", machine_defaults=True,
                    TASK_POLL_INTERVAL=0.1).start()
    try:
        wait_for(lambda: len(server.pids()) == 1 + web + task_processes, message="every worker process")
        status, _, ready = server.request("GET", "/readyz")
        runs_tasks = 0 if task_processes else task_workers  # beside task processes a web one runs none
        assert status == 200 and ready["pool"]["size"] == threads + runs_tasks + 2
        locations = [server.request("GET", "/user/thread_pool")[1]["Location"] for _ in range(20)]
        wait_for(lambda: all(server.request("GET", where)[2]["status"] == "succeeded"
                             for where in locations), message="the tasks")
        assert len(server.request("GET", "/api/users?page_size=100")[2]) == 20
    finally:
        server.stop()


def scrape(server):
    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as response:
        return response.read().decode()


def owner_pids(server, locations):
    """The pids of the processes that ran these tasks (owner is host:pid:id)."""
    return {int(server.request("GET", where)[2]["owner"].split(":")[1]) for where in locations}


def submit_and_finish(server, count):
    locations = [server.request("GET", "/user/thread_pool")[1]["Location"] for _ in range(count)]
    wait_for(lambda: all(server.request("GET", where)[2]["status"] == "succeeded"
                         for where in locations), message=f"{count} tasks")
    return locations


def test_a_task_process_runs_every_task_at_once_serves_no_request_and_is_replaced_in_its_role(
        migrated_db, tmp_path):
    import os
    import signal

    # Polling once a minute: the task process hears of each task from the web process.
    server = Server(migrated_db, tmp_path / "roles.log", WEB_WORKERS=1, TASK_PROCESSES=1,
                    TASK_WORKERS=2, TASK_POLL_INTERVAL=60, SEED_TASK_DELAY=0).start()
    try:
        _, *workers = wait_for(lambda: len(server.pids()) == 3 and server.pids(),
                               message="the web and the task process")
        answers = [server.request("GET", "/readyz")[2] for _ in range(20)]
        # Every request reached the web process: it runs no runner and pools no task connections.
        assert {(ready["runner"], ready["pool"]["size"]) for ready in answers} == {(None, 8 + 0 + 2)}
        ran = owner_pids(server, submit_and_finish(server, 30))
        assert len(ran) == 1 and ran < set(workers)  # one process ran them all
        # The web process's /metrics sums what the task process counted.
        assert total(scrape(server), "tasks_succeeded_total") == 30
        (task_pid,) = ran
        (web_pid,) = set(workers) - ran

        os.kill(task_pid, signal.SIGKILL)  # gunicorn starts another worker: it takes the task role
        def replaced():  # one look at the processes: the killed one may still be reaped in between
            pids = server.pids()
            return len(pids) == 3 and task_pid not in pids and pids
        _, *workers = wait_for(replaced, message="a new worker in its place")
        ran = owner_pids(server, submit_and_finish(server, 20))
        assert ran == set(workers) - {web_pid}
        assert server.request("GET", "/readyz")[2]["runner"] is None  # the web process is still web
    finally:
        server.stop()


def test_sigterm_stops_the_server_cleanly(server):
    status, _, task = server.request("POST", "/api/tasks", {"name": "create_user",
                                                          "args": {"name": "a", "age": 1}})
    assert status == 202
    server.stop(timeout=30)
    assert server.proc.returncode == 0
    assert "stopped;" in server.output()


def test_a_request_gunicorn_refuses_gets_the_json_error_shape(server):
    status, headers, body = server.request("GET", "/api/users?" + "x=1&" * 2000)
    assert status == 414
    assert headers["Content-Type"] == "application/json"
    assert body["code"] == 414 and body["message"] == "URI Too Long"


def test_slow_article_requests_cannot_take_every_request_thread(migrated_db, tmp_path):
    """4 request threads leave one /user/add slot: the rest are 503 and health stays prompt."""
    server = Server(migrated_db, tmp_path / "slow.log", WEB_THREADS=4, SEED_SYNC_DELAY=5,
                    TASK_POLL_INTERVAL=0.1).start()
    try:
        answers = []

        def add_user():
            answers.append(server.request("GET", "/user/add", timeout=60))

        slow = [threading.Thread(target=add_user) for _ in range(6)]
        for thread in slow:
            thread.start()
        wait_for(lambda: len(answers) >= 5, message="the requests over the cap to be turned away")
        # Health, readiness and the API answer while the slow one still holds its thread.
        assert server.request("GET", "/healthz", timeout=4)[0] == 200
        assert server.request("GET", "/readyz", timeout=4)[0] == 200
        assert server.request("POST", "/api/users", {"name": "fast", "age": 1}, timeout=4)[0] == 201
        assert len(answers) == 5, "the slow request finished before health was answered"
        for thread in slow:
            thread.join(timeout=30)
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] + [503] * 5
        busy = [(headers, body) for status, headers, body in answers if status == 503]
        assert all(int(headers["Retry-After"]) == 5 and body["code"] == 503 for headers, body in busy)
    finally:
        server.stop()
