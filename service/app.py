"""The Flask application factory: routing over the task system (service.runner)."""
import os

from flask import Flask
from flask_cors import CORS

from db import Session, init_engine
from service import logs
from service.api import require_json_bodies
from service.auth import init_auth
from service.config import load_config, pool_size, write_turn
from service.errors import register_error_handlers
from service.runner import RunnerConfig, make_executor, registry, submit
from service.runner.registry import load_task_modules

API_SETTINGS = {
    "API_TITLE": "Durable tasks",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "PROPAGATE_EXCEPTIONS": False,
}


def create_app(config=None):
    """Build the app: settings, database, errors, CORS, routes, the executor that runs tasks."""
    app = Flask(__name__, static_folder=None)
    app.config.update(API_SETTINGS)
    app.config.update(load_config(os.environ))
    app.config.update(config or {})
    configure_logging(app)
    init_database(app)
    init_cors(app)
    register_blueprints(app)
    init_auth(app)  # after the blueprints: a refused request is still timed and logged
    require_json_bodies(app)  # after auth: a stranger gets the 401, whatever the body
    register_error_handlers(app)
    init_executor(app)
    return app


def configure_logging(app):
    """Send our loggers to stderr at LOG_LEVEL, as text or JSON (LOG_FORMAT)."""
    logs.configure(app.config)


def init_database(app):
    """Create the engine with a pool for request threads plus task threads."""
    serving = app.config["PROCESS_ROLE"] != "tasks"  # a task process takes no requests
    needed = pool_size(app.config, request_threads=app.config["WEB_THREADS"] if serving else 0)
    processes = app.config["WEB_WORKERS"] + app.config["TASK_PROCESSES"]
    init_engine(app.config["DATABASE_URL"], pool_size=needed, max_overflow=needed,
                write_turn=write_turn(app.config, processes))
    app.teardown_appcontext(lambda exc: Session.remove())


def init_cors(app):
    """Allow cross-origin calls only from the origins listed in CORS_ORIGINS."""
    if app.config["CORS_ORIGINS"]:
        CORS(app, origins=app.config["CORS_ORIGINS"], supports_credentials=False)


def register_blueprints(app):
    """Mount every resource under one flask-smorest Api (OpenAPI at /openapi.json)."""
    load_task_modules(app.config)  # the document lists every registered task
    from service import dashboard
    from service.api import IdConverter, health, observe, queues, schedules, seed, stats, tasks, users
    from service.api.openapi import ServiceApi, describe_task_body

    app.url_map.converters["id"] = IdConverter
    api = ServiceApi(app)
    modules = [users, tasks, queues, schedules, stats, seed, health]
    if app.config["BENCH_MODE"]:
        from service import bench

        modules.append(bench)
    for module in modules:
        api.register_blueprint(module.blp)
    describe_task_body(api, registry)
    app.register_blueprint(dashboard.root)
    app.register_blueprint(dashboard.blp)
    app.register_blueprint(observe.blp)


def init_executor(app):
    """Create the executor; it starts in the serving process (first request or gunicorn's
    post_worker_init), never before a fork."""
    submit.configure(app.config["TASK_MAX_QUEUED"], app.config["UNIQUE_WINDOW"])
    executor = make_executor(RunnerConfig.from_settings(app.config))
    app.extensions["executor"] = executor
    if executor.runs_here():
        app.before_request(executor.ensure_started)
    return executor
