"""Settings and requests at their edges: one-line refusals, an open server's warning,
JSON logs from gunicorn too, 415 for a body that is not JSON, no control characters in names."""
import json
import os
import subprocess
import sys

import pytest
from marshmallow import ValidationError

from db.models import Task, User
from service.config import ConfigError, load_config
from service.schemas import SubmitHeaders
from tests.conftest import ROOT, count_rows, wait_for
from tests.server import Process, Server, free_port, migrate

BIN = os.path.dirname(sys.executable)
ENTRY_POINTS = {
    "server": [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"],
    "worker": [sys.executable, "-m", "service.worker"],
    "migrations": [os.path.join(BIN, "alembic"), "upgrade", "head"],
    "cli": [os.path.join(BIN, "tasks"), "list"],
}
BAD_SETTINGS = [
    ("PORT", "99999", "PORT must be at most 65535, got '99999'"),
    ("DATABASE_URL", "postgresql://app:secret@127.0.0.1/app",
     "DATABASE_URL cannot be used: postgresql is not supported "
     "(supported: sqlite, mysql+pymysql, postgresql+psycopg;"),
    ("DATABASE_URL", "postgresql+psycopg2://app:secret@127.0.0.1/app",
     "DATABASE_URL cannot be used: postgresql+psycopg2 is not supported "
     "(supported: sqlite, mysql+pymysql, postgresql+psycopg;"),
    ("DATABASE_URL", "mysql://app:secret@127.0.0.1/app",
     "DATABASE_URL cannot be used: mysql is not supported (supported: sqlite, mysql+pymysql"),
    ("DATABASE_URL", "::not a url:secret", "DATABASE_URL cannot be used: it cannot be parsed"),
    ("DATABASE_URL", "sqlite:///:memory:", "DATABASE_URL cannot be used: SQLite must be a file database"),
]


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


# -- 1. a bad setting is one line, on every entry point ---------------------------------


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS)
def test_a_bad_port_or_database_url_is_a_config_error_naming_it(key, value, message):
    with pytest.raises(ConfigError, match=key) as raised:
        load_config({key: value})
    assert message in str(raised.value) and "secret" not in str(raised.value)


@pytest.mark.parametrize("url", ["sqlite:///var/app.db", "sqlite+pysqlite:///x.db",
                                 "mysql+pymysql://root:@127.0.0.1:3306/test",
                                 "mariadb+pymysql://root:@127.0.0.1/test"])
def test_the_supported_database_urls_are_accepted(url):
    assert load_config({"DATABASE_URL": url})["DATABASE_URL"] == url


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("key, value, message", BAD_SETTINGS)
def test_every_entry_point_refuses_a_bad_setting_in_one_line(entry, key, value, message, tmp_path):
    if entry == "migrations" and key != "DATABASE_URL":
        pytest.skip("migrations read DATABASE_URL only")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", key: value}
    finished = subprocess.run(ENTRY_POINTS[entry], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    output = finished.stdout + finished.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert finished.returncode != 0, output
    assert len(lines) == 1 and "Traceback" not in output, output
    assert message in lines[0] and "secret" not in output


# -- 2. an open server on a reachable host says so when it starts -------------------------


def open_host(process):
    """Listen on every interface, open (the test servers otherwise stay on loopback)."""
    process.env.update(HOST="0.0.0.0", ALLOW_UNAUTHENTICATED="true")
    return process


def warning_lines(output):
    return [line for line in output.splitlines() if "WITHOUT authentication" in line]


@pytest.mark.slow
def test_a_server_started_open_on_a_reachable_host_logs_a_warning(migrated_db, tmp_path):
    server = open_host(Server(migrated_db, tmp_path / "server.log"))
    server.start()
    server.stop()
    [line] = warning_lines(server.output())
    assert " WARNING " in line and "service.tokens: serving HOST=0.0.0.0" in line, line


@pytest.mark.slow
def test_a_worker_serving_metrics_open_on_a_reachable_host_logs_a_warning(migrated_db, tmp_path):
    worker = open_host(Process([sys.executable, "-m", "service.worker"], migrated_db,
                               tmp_path / "worker.log", METRICS_PORT=free_port()))
    worker.start()
    try:
        wait_for(lambda: "metrics at" in worker.output(), message="the worker's metrics")
    finally:
        worker.stop()
    [line] = warning_lines(worker.output())
    assert " WARNING " in line and "service.tokens: serving HOST=0.0.0.0" in line, line


# -- 3. LOG_FORMAT=json: every line, gunicorn's own too -----------------------------------


@pytest.mark.slow
def test_with_json_logs_every_line_of_a_real_server_is_json(migrated_db, tmp_path):
    server = open_host(Server(migrated_db, tmp_path / "server.log", LOG_FORMAT="json"))
    server.args += ["--access-logfile", "-"]  # gunicorn's access log, when someone turns it on
    server.start()
    try:
        status, _, _ = server.request("POST", "/api/users", {"name": "ann", "age": 3})
        assert status == 201
    finally:
        server.stop()
    assert server.proc.returncode == 0
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not JSON: {line!r}\n{server.output()}")
    gunicorns = [r["message"] for r in records if r["name"] == "gunicorn.error"]
    assert any(m.startswith("Starting gunicorn") for m in gunicorns), gunicorns
    assert any(m.startswith("Booting worker") for m in gunicorns), gunicorns
    assert any(r["name"] == "gunicorn.access" and "POST /api/users" in r["message"] for r in records)
    assert any(r["name"] == "service.tokens" and r["level"] == "WARNING" for r in records)
    assert all({"time", "level", "name", "message"} <= set(r) for r in records)


# -- 4. a JSON route refuses a body that is not said to be JSON ----------------------------


SUBMIT = {"name": "create_user", "args": {"name": "ann", "age": 3}}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path, body", [("/api/tasks", SUBMIT), ("/api/users", {"name": "ann", "age": 3}),
                                        ("/api/tasks/cancel", {"name": "create_user"}),
                                        ("/api/tasks/retry", {"name": "create_user"})])
def test_a_json_body_without_a_json_content_type_is_415(client, path, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=json.dumps(body), headers=headers)
    assert response.status_code == 415, response.get_json()
    error = response.get_json()
    assert error["code"] == 415 and "Content-Type: application/json" in error["message"]
    assert set(error) == {"code", "message", "details"} and "Content-Type" in error["details"]["headers"]
    assert count_rows(Task) == 0 and count_rows(User) == 0


def test_json_content_types_and_bodiless_actions_still_work(client):
    created = client.post("/api/users", data=json.dumps({"name": "ann", "age": 3}),
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert created.status_code == 201
    task = client.post("/api/tasks", json={**SUBMIT, "delay": 600}).get_json()
    assert client.post(f"/api/tasks/{task['id']}/cancel").status_code == 200  # no body, none needed
    assert client.post(f"/api/tasks/{task['id']}/retry").status_code == 202
    # A bulk action without a body still says a body is required (422), as before.
    assert client.post("/api/tasks/cancel").status_code == 422


def test_the_dashboards_form_posts_still_work(make_app):
    client = make_app(API_TOKENS=["t0ken"], SECRET_KEY="s").test_client()
    client.get("/dashboard/signin")
    with client.session_transaction() as session:
        csrf = session["csrf"]
    signed_in = client.post("/dashboard/signin", data={"token": "t0ken", "csrf_token": csrf})
    assert signed_in.status_code == 302
    with client.session_transaction() as session:
        csrf = session["csrf"]
    assert client.post("/dashboard/signout", data={"csrf_token": csrf}).status_code == 302


# -- 5. no control characters in names ----------------------------------------------------


CONTROL = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]


def refused_field(response, location, field):
    assert response.status_code == 422, response.get_json()
    [why] = response.get_json()["details"][location][field]
    return why


@pytest.mark.parametrize("char", CONTROL)
def test_a_user_name_with_a_control_character_is_422(client, char):
    response = client.post("/api/users", json={"name": f"an{char}n", "age": 3})
    assert "control character" in refused_field(response, "json", "name")
    assert count_rows(User) == 0


@pytest.mark.parametrize("char", CONTROL)
def test_a_task_name_with_a_control_character_is_422(client, char):
    response = client.post("/api/tasks", json={**SUBMIT, "name": f"create_user{char}"})
    assert "control character" in refused_field(response, "json", "name")
    listed = client.get("/api/tasks", query_string={"name": f"create{char}user"})
    assert "control character" in refused_field(listed, "query", "name")
    bulk = client.post("/api/tasks/cancel", json={"name": f"create{char}user"})
    assert "control character" in refused_field(bulk, "json", "name")
    assert count_rows(Task) == 0


def test_names_in_any_script_and_free_text_arguments_are_accepted(client):
    assert client.post("/api/users", json={"name": "Zoë 李 😀", "age": 3}).status_code == 201
    response = client.post("/api/tasks", json={"name": "sleepy", "args": {"name": "a\tb\nc"}, "delay": 600})
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize("key", ["abc\n", "a\x00b"])
def test_an_idempotency_key_with_a_control_character_is_refused(key):
    with pytest.raises(ValidationError) as raised:
        SubmitHeaders().load({"Idempotency-Key": key})
    assert "Idempotency-Key" in raised.value.messages


def test_a_unique_key_or_queue_name_with_a_final_newline_is_refused():
    from db.queues import check_queue_name
    from service.runner.submit import check_unique_key

    for check, good in ((check_unique_key, "order-17"), (check_queue_name, "mail")):
        assert check(good) == good
        for bad in (good + "\n", good + "\x00", "\n" + good):
            with pytest.raises(ValueError):
                check(bad)


def test_the_create_user_task_refuses_a_control_character_in_the_name(client):
    from db.models import Task

    answer = client.post("/api/tasks", json={"name": "create_user", "args": {"name": "a\x00b", "age": 1}})
    assert answer.status_code == 422 and "name" in answer.get_json()["details"]["json"]["args"]
    assert count_rows(Task) == 0
