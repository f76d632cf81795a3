"""Settings come from the environment, with safe defaults and clear errors."""
import pytest

from service import config as config_module
from service.config import ConfigError, default_layout, load_config


def test_defaults_are_safe():
    config = load_config({})
    assert config["DATABASE_URL"] == "sqlite:///var/app.db"
    assert config["HOST"] == "127.0.0.1"
    assert config["CORS_ORIGINS"] == []
    assert config["ALLOW_DB_RESET"] is False
    assert config["DEBUG"] is False
    assert config["TASK_MAX_QUEUED"] == 10_000


@pytest.mark.parametrize("cpus, layout", [(1, (1, 8, 0, 4)), (2, (1, 12, 1, 4)), (3, (2, 12, 1, 4)),
                                          (4, (2, 12, 2, 4)), (64, (4, 12, 4, 4))])
def test_the_default_layout_follows_the_cpus_this_process_may_use(monkeypatch, cpus, layout):
    assert default_layout(cpus) == layout
    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    config = load_config({})
    keys = ("WEB_WORKERS", "WEB_THREADS", "TASK_PROCESSES", "TASK_WORKERS")
    assert tuple(config[key] for key in keys) == layout
    given = load_config({"WEB_WORKERS": "3", "WEB_THREADS": "6", "TASK_PROCESSES": "2",
                         "TASK_WORKERS": "5"})
    assert tuple(given[key] for key in keys) == (3, 6, 2, 5)
    # A web process that only queues tasks for a MySQL server gets more request threads.
    mysql = {"DATABASE_URL": "mysql+pymysql://root:@127.0.0.1/test"}
    assert tuple(load_config(mysql)[key] for key in keys) == default_layout(cpus, mysql["DATABASE_URL"])
    assert default_layout(cpus, mysql["DATABASE_URL"])[1] == (8 if cpus == 1 else 16)
    # Where no task runs in the server, it has no task processes either.
    assert load_config({"TASK_WORKERS": "0"})["TASK_PROCESSES"] == 0
    assert load_config({"TASK_EXECUTOR": "celery"})["TASK_PROCESSES"] == 0


@pytest.mark.parametrize("environ", [{}, {"WEB_WORKERS": "3"}, {"TASK_PROCESSES": "2"}, {"TASK_WORKERS": "0"},
                                     {"TASK_EXECUTOR": "celery"}, {"WEB_WORKERS": "2", "TASK_PROCESSES": "0"}])
def test_gunicorn_knows_the_process_count_before_it_reads_the_settings(environ):
    settings = load_config(environ)
    assert config_module.server_processes(environ) == settings["WEB_WORKERS"] + settings["TASK_PROCESSES"]


def test_a_process_role_decides_what_it_serves_and_runs():
    web = load_config({"PROCESS_ROLE": "web", "TASK_WORKERS": "4", "TASK_PROCESSES": "1"})
    assert web["TASK_WORKERS"] == 0  # a web process runs no tasks
    tasks = load_config({"PROCESS_ROLE": "tasks", "TASK_WORKERS": "4", "TASK_PROCESSES": "1"})
    assert tasks["TASK_WORKERS"] == 4
    assert load_config({})["PROCESS_ROLE"] == "both"


@pytest.mark.parametrize("environ, message", [
    ({"TASK_WORKERS": "0", "TASK_PROCESSES": "1"}, "TASK_PROCESSES must be 0 when TASK_WORKERS is 0"),
    ({"TASK_EXECUTOR": "celery", "TASK_PROCESSES": "1"}, "TASK_PROCESSES must be 0 when TASK_EXECUTOR=celery"),
    ({"TASK_PROCESSES": "many"}, "TASK_PROCESSES must be a int"),
    ({"PROCESS_ROLE": "boss"}, "PROCESS_ROLE must be one of both, web, tasks"),
])
def test_a_task_process_setting_that_cannot_work_is_refused(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ)


def test_values_are_read_and_typed():
    config = load_config({"TASK_WORKERS": "2", "TASK_LEASE": "2.5", "ALLOW_DB_RESET": "yes",
                          "CORS_ORIGINS": "https://a.example, https://b.example",
                          "LOG_LEVEL": "debug"})
    assert config["TASK_WORKERS"] == 2
    assert config["TASK_LEASE"] == 2.5
    assert config["ALLOW_DB_RESET"] is True
    assert config["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert config["LOG_LEVEL"] == "DEBUG"


@pytest.mark.parametrize("key, value", [
    ("PORT", "eighty"), ("TASK_WORKERS", "-1"), ("ALLOW_DB_RESET", "maybe"),
    ("SEED_TASK_DELAY", "301"), ("TASK_LEASE", "0"), ("SEED_SYNC_SLOTS", "16"),
    ("TASK_RETENTION", "7x"), ("TASK_RETENTION", "99999999d"), ("TASK_RETENTION", "-1d"),
    ("LOG_FORMAT", "xml"), ("METRICS_PORT", "70000"), ("UNIQUE_WINDOW", "soon"),
    ("UNIQUE_WINDOW", "-5"), ("TASK_QUEUES", "emails,bad name"),
])
def test_bad_values_name_the_setting(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config({key: value})


@pytest.mark.parametrize("threads, slots", [(1, 0), (2, 1), (4, 1), (8, 2), (16, 4)])
def test_slow_article_requests_get_a_quarter_of_the_request_threads_and_never_the_last(
        threads, slots):
    assert load_config({"WEB_THREADS": str(threads)})["SEED_SYNC_SLOTS"] == slots


@pytest.mark.parametrize("raw, seconds", [("7d", 604800), ("90", 90), ("1.5h", 5400), ("0", 0),
                                          ("2w", 1209600), ("15m", 900)])
def test_retention_reads_durations(raw, seconds):
    assert load_config({"TASK_RETENTION": raw})["TASK_RETENTION"] == seconds


@pytest.mark.parametrize("choice, processes, expected", [
    ("auto", 1, False), ("auto", 2, True), ("on", 1, True), ("off", 3, False)])
def test_sqlite_writers_take_turns_where_more_than_one_process_writes(choice, processes, expected):
    settings = load_config({"SQLITE_WRITE_TURN": choice})
    assert config_module.write_turn(settings, processes) is expected


def test_a_server_of_one_process_leaves_sqlite_writers_to_its_busy_handler(make_app, db_url):
    from sqlalchemy import event

    if not db_url.startswith("sqlite"):
        pytest.skip("the write turn is SQLite's")

    from db import get_engine
    from db.dialects.sqlite_turn import take_turn_before_writes

    make_app(WEB_WORKERS=1, TASK_PROCESSES=0)
    assert not event.contains(get_engine(), "before_cursor_execute", take_turn_before_writes)
    make_app(WEB_WORKERS=1, TASK_PROCESSES=1)
    assert event.contains(get_engine(), "before_cursor_execute", take_turn_before_writes)
