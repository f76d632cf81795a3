"""The Flask application factory: routing over the task system (service.runner)."""

from flask import Flask
from flask_cors import CORS

from db import Session
from service import startup
from service.api import require_json_bodies
from service.auth import init_auth
from service.errors import register_error_handlers
from service.runner import RunnerConfig, make_executor, registry

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
    app.config.update(startup.settings_from_environment(config))
    init_process(app)
    init_cors(app)
    register_blueprints(app)
    init_auth(app)  # after the blueprints: a refused request is still timed and logged
    require_json_bodies(app)  # after auth: a stranger gets the 401, whatever the body
    register_error_handlers(app)
    init_executor(app)
    return app


def init_process(app):
    """The process's start-up (logs, task modules, the engine, its pool sized for request
    threads plus task threads); each request's Session is removed at its teardown."""
    serving = app.config["PROCESS_ROLE"] != "tasks"  # a task process takes no requests
    connections = startup.thread_pool_connections(
        app.config, request_threads=app.config["WEB_THREADS"] if serving else 0)
    startup.start(app.config, connections, writers=startup.server_writers(app.config))
    app.teardown_appcontext(lambda exc: Session.remove())


def init_cors(app):
    """Allow cross-origin calls only from the origins listed in CORS_ORIGINS."""
    if app.config["CORS_ORIGINS"]:
        CORS(app, origins=app.config["CORS_ORIGINS"], supports_credentials=False)


def register_blueprints(app):
    """Mount every resource under one flask-smorest Api (OpenAPI at /openapi.json)."""
    from service import dashboard
    from service.api import (IdConverter, health, observe, queues, schedules, seed, stats, tasks, users,
                             workflows)
    from service.api.openapi import ServiceApi, describe_task_body, describe_workflow_body

    app.url_map.converters["id"] = IdConverter
    api = ServiceApi(app)
    modules = [users, tasks, workflows, queues, schedules, stats, seed, health]
    if app.config["BENCH_MODE"]:
        from service import bench

        modules.append(bench)
    for module in modules:
        api.register_blueprint(module.blp)
    describe_task_body(api, registry)
    describe_workflow_body(api, registry)
    app.register_blueprint(dashboard.root)
    app.register_blueprint(dashboard.blp)
    app.register_blueprint(observe.blp)


def init_executor(app):
    """Create the executor; it starts in the serving process (first request or gunicorn's
    post_worker_init), never before a fork."""
    executor = make_executor(RunnerConfig.from_settings(app.config))
    app.extensions["executor"] = executor
    if executor.runs_here():
        app.before_request(executor.ensure_started)
    return executor
