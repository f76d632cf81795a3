"""Tasks registered only for the tests."""
import sqlite3
import threading
import time

import flask
from marshmallow import Schema, fields
from sqlalchemy.exc import OperationalError

from db import Session, users
from service.runner import RetryTask, task


class NoArgs(Schema):
    pass


class Seconds(Schema):
    seconds = fields.Float(load_default=0.0)
    name = fields.String(load_default="sleepy")


class Times(Schema):
    times = fields.Integer(required=True)
    delay = fields.Float(load_default=None, allow_none=True)


@task("noop", schema=NoArgs)
def noop(ctx):
    return None


@task("fail_always", schema=NoArgs)
def fail_always(ctx):
    users.create_user(Session, name="must roll back", age=1)
    raise ValueError("boom")


@task("probe", schema=NoArgs)
def probe(ctx):
    """Report what the task thread sees at its start, then write a user."""
    seen = {
        "session_at_start": Session.registry.has(),
        "app_context": flask.has_app_context(),
        "thread": threading.current_thread().name,
    }
    users.create_user(Session, name="probe", age=1)
    return seen


@task("sleepy", schema=Seconds)
def sleepy(ctx, seconds, name):
    """Sleep (cancellable), reporting progress, then write a user named name."""
    ctx.progress(50, "sleeping")
    ctx.sleep(seconds)
    return users.create_user(Session, name=name, age=1).id


@task("stubborn", schema=Seconds)
def stubborn(ctx, seconds, name):
    """Ignore cancellation for seconds, then write a user."""
    time.sleep(seconds)
    users.create_user(Session, name=name, age=1)
    return "late"


@task("flaky", schema=Times, max_attempts=5)
def flaky(ctx, times, delay):
    """Fail with a transient database error on the first `times` attempts."""
    users.create_user(Session, name=f"flaky attempt {ctx.attempt}", age=ctx.attempt)
    if ctx.attempt <= times:
        raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
    return ctx.attempt


@task("retry_me", schema=Times, max_attempts=4)
def retry_me(ctx, times, delay):
    """Ask for a retry on the first `times` attempts."""
    if ctx.attempt <= times:
        raise RetryTask("not yet", delay=delay)
    return ctx.attempt


@task("unstorable", schema=NoArgs)
def unstorable(ctx):
    return object()
