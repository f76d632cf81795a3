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


@pytest.mark.parametrize("cpus, layout", [(1, (1, 8, 4)), (2, (2, 4, 2)), (4, (4, 4, 2)),
                                          (64, (8, 4, 2))])
def test_the_default_layout_follows_the_cpus_this_process_may_use(monkeypatch, cpus, layout):
    assert default_layout(cpus) == layout
    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    config = load_config({})
    assert (config["WEB_WORKERS"], config["WEB_THREADS"], config["TASK_WORKERS"]) == layout
    given = load_config({"WEB_WORKERS": "3", "WEB_THREADS": "6", "TASK_WORKERS": "5"})
    assert (given["WEB_WORKERS"], given["WEB_THREADS"], given["TASK_WORKERS"]) == (3, 6, 5)


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
    ("SEED_TASK_DELAY", "301"), ("TASK_LEASE", "0"), ("SEED_SYNC_SLOTS", "8"),
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
