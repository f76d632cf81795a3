"""Start-up: what every process of the service does first, in one order.

The app (each gunicorn worker), `make worker`, the Celery worker and the
`tasks` command all call start(): the settings from the environment, logging,
the task modules, the submit options, and the engine with its pool sized for
the process's threads and SQLite's write turn decided by how many processes
write. Each then adds its own front: routes, a thread pool, Celery's signals,
a command.
"""
import os

from sqlalchemy.exc import ArgumentError

from db import init_engine
from service import logs
from service.config import ConfigError, load_config, write_turn
from service.runner import submit
from service.runner.registry import load_task_modules

DISPATCHER_CONNECTIONS = 2  # a thread pool's dispatcher and its upkeep, beside its workers


def settings_from_environment(overrides=None):
    """load_config(os.environ) with overrides on top; ConfigError for a bad setting."""
    settings = load_config(os.environ)
    settings.update(overrides or {})
    return settings


def start(settings, threads, writers):
    """Set this process up to submit and run tasks; return settings (ConfigError for a
    database URL the engine refuses).

    threads: how many of its threads may hold a connection at once (the pool
    keeps that many, and as many again for bursts); writers: how many
    processes write to the database while this one runs, itself included.
    """
    logs.configure(settings)
    load_task_modules(settings)
    submit.configure(settings["TASK_MAX_QUEUED"], settings["UNIQUE_WINDOW"])
    try:
        init_engine(settings["DATABASE_URL"], pool_size=threads, max_overflow=threads,
                    write_turn=write_turn(settings, writers))
    except (ArgumentError, ImportError, ValueError) as error:  # say so in one line, not a traceback
        raise ConfigError(f"DATABASE_URL cannot be used: {error}") from None
    return settings


def server_writers(settings):
    """The processes of a gunicorn server (web and task processes) that write."""
    return settings["WEB_WORKERS"] + settings["TASK_PROCESSES"]


def thread_pool_connections(settings, request_threads=0):
    """Connections a process needs: its request threads, its task workers and the dispatcher's."""
    return request_threads + settings["TASK_WORKERS"] + DISPATCHER_CONNECTIONS
