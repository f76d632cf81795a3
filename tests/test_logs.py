"""LOG_FORMAT=json: one JSON object per line, task fields inside tasks, request lines."""
import json
import logging
import urllib.request

import pytest

from service import logs
from service.config import ConfigError, load_config
from tests.conftest import wait_for
from tests.server import Server, migrate


def test_bad_log_format_names_the_setting():
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_config({"LOG_FORMAT": "xml"})


def test_text_lines_name_the_task_they_were_logged_in(capsys):
    logs.configure({"LOG_LEVEL": "INFO", "LOG_FORMAT": "text"})
    try:
        class Claim:
            id, name, attempt = 7, "create_user", 2
        token = logs.running(Claim, "host:1:abc")
        logging.getLogger("service.jobs").info("inserting")
        logs.finished(token)
        logging.getLogger("service.jobs").info("outside")
    finally:
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                           if h.name != logs.HANDLER_NAME]
    inside, outside = capsys.readouterr().err.strip().splitlines()[-2:]
    assert "[task 7 create_user attempt 2] inserting" in inside
    assert "[task" not in outside and outside.endswith("outside")


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


@pytest.mark.slow
def test_json_logs_of_a_real_server_carry_task_and_request_fields(migrated_db, tmp_path):
    log_path = tmp_path / "server.log"
    server = Server(migrated_db, log_path, LOG_FORMAT="json", LOG_LEVEL="DEBUG",
                    TASK_POLL_INTERVAL=0.05, API_TOKENS="never-log-me", SECRET_KEY="k").start()
    try:
        status, _, _ = server.request("POST", "/api/tasks", {"name": "create_user",
                                                            "args": {"name": "x", "age": 1}})
        assert status == 401  # no token: still a request line
        call = urllib.request.Request(server.base + "/api/tasks", method="POST",
                               data=json.dumps({"name": "create_user", "args": {
                                   "name": "logged", "age": 1, "delay": 0.6}}).encode(),
                               headers={"Content-Type": "application/json",
                                        "Authorization": "Bearer never-log-me"})
        with urllib.request.urlopen(call, timeout=10) as response:
            task_id = json.loads(response.read())["id"]

        def lines():
            return [json.loads(line) for line in log_path.read_text().splitlines()
                    if line.startswith("{")]
        wait_for(lambda: any(line.get("task_id") == task_id for line in lines()),
                 message="a line logged inside the task")
    finally:
        server.stop()
    records = lines()
    assert records and all({"time", "level", "name", "message"} <= set(r) for r in records)
    in_task = [r for r in records if r.get("task_id") == task_id]
    assert all(r["task_name"] == "create_user" and r["attempt"] == 1 and r["owner"] for r in in_task)
    requests = [r for r in records if r["name"] == "service.requests"]
    assert {(r["method"], r["path"], r["status"]) for r in requests} >= {
        ("POST", "/api/tasks", 401), ("POST", "/api/tasks", 202)}
    assert all(isinstance(r["duration_ms"], float) for r in requests)
    assert "never-log-me" not in log_path.read_text()
