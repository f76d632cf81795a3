"""Tasks the Celery tests run in real Celery workers (--include tests.celery_tasks). No Flask here."""
import sys
import time

from marshmallow import Schema, fields

from db import Session, get_engine, users
from service.runner import RetryTask, task


class Empty(Schema):
    pass


class Named(Schema):
    name = fields.String(required=True)
    seconds = fields.Float(load_default=0.0)


@task("celery_report", schema=Empty)
def celery_report(ctx):
    """What the worker process has loaded and holds: Flask? connections checked out?

    The fewest seen within two seconds: the upkeep and relay threads check one out
    for a moment several times a second, a leaked one stays out the whole time (as
    does the one this task's worker thread holds while it runs).
    """
    pool, deadline = get_engine().pool, time.monotonic() + 2
    checked_out = pool.checkedout()
    while checked_out and time.monotonic() < deadline:
        ctx.sleep(0.005)
        checked_out = min(checked_out, pool.checkedout())
    return {"flask": "flask" in sys.modules, "checked_out": checked_out}


@task("celery_progress", schema=Named)
def celery_progress(ctx, name, seconds):
    """Report progress for seconds (stopping when cancelled), then insert a user."""
    steps = max(1, int(seconds * 4))
    for step in range(steps):
        ctx.progress(100 * step / steps, f"step {step}")
        ctx.sleep(seconds / steps)
    return users.create_user(Session, name=name, age=1).id


@task("celery_retry_once", schema=Named)
def celery_retry_once(ctx, name, seconds):
    """Ask for another attempt (after seconds) the first time; insert a user on the second."""
    if ctx.attempt == 1:
        raise RetryTask("not yet", delay=seconds)
    return users.create_user(Session, name=name, age=ctx.attempt).id


@task("celery_stubborn", schema=Named, time_limit=0.5)
def celery_stubborn(ctx, name, seconds):
    """Ignore the time limit: work for seconds without looking at ctx, then write."""
    time.sleep(seconds)
    return users.create_user(Session, name=name, age=1).id


@task("celery_mail", schema=Named, queue="mail")
def celery_mail(ctx, name, seconds):
    """A task of the "mail" queue: insert a user."""
    return users.create_user(Session, name=name, age=1).id
