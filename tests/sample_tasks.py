"""Tasks registered only for the tests."""
import sqlite3
import threading
import time

import flask
from marshmallow import Schema, fields
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import OperationalError

from db import Session, session_scope, users
from db.models import Task, User
from service.runner import RetryTask, TaskCancelled, TimeLimitExceeded, task
from tests.server_sql import kill_connection_sql, own_connection_id_sql


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


PROBE_WRITES = {}  # task id -> (its Session, the user it wrote): was that Session closed?


@task("probe", schema=NoArgs)
def probe(ctx):
    """Report what the task thread sees at its start, then write a user."""
    session = Session()
    seen = {
        # Anything a previous task left: objects, a transaction, or our own mark.
        "session_at_start": bool(session.identity_map) or session.in_transaction()
        or "probe" in session.info,
        "app_context": flask.has_app_context(),
        "thread": threading.current_thread().name,
    }
    session.info["probe"] = ctx.task_id
    PROBE_WRITES[ctx.task_id] = session, users.create_user(Session, name="probe", age=1)
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


@task("drop_connection", schema=NoArgs, max_attempts=1)
def drop_connection(ctx):
    """Lose this task's database connection, as a server restart would."""
    connection = Session.connection()
    if connection.dialect.name == "sqlite":
        connection.invalidate()  # a file database cannot be cut off; drop it by hand
        raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error"))
    own_id = connection.execute(own_connection_id_sql(connection.dialect.name)).scalar()
    connection.execute(kill_connection_sql(connection.dialect.name, own_id))  # answers with an error


@task("write_through_bind", schema=NoArgs)
def write_through_bind(ctx):
    """Write a user on the connection the Session runs on, not through the Session."""
    Session.get_bind().execute(insert(User).values(name="through bind", age=1))


@task("timeouts", schema=Times, max_attempts=5, retry_on=(TimeoutError, ConnectionError))
def timeouts(ctx, times, delay):
    """Time out on the first `times` attempts (retried); then write and succeed."""
    if ctx.attempt <= times:
        raise TimeoutError(f"upstream timed out on attempt {ctx.attempt}")
    return users.create_user(Session, name=f"after {ctx.attempt}", age=ctx.attempt).id


@task("wrong_value", schema=NoArgs, max_attempts=5, retry_on=(TimeoutError,))
def wrong_value(ctx):
    """An error not in retry_on: fails at once."""
    raise ValueError("not a timeout")


class Rank(Schema):
    rank = fields.Integer(required=True)


RANKED_STARTS = []  # (task id, its rank, the highest rank still queued as it started)
_ranked_lock = threading.Lock()


@task("ranked", schema=Rank)
def ranked(ctx, rank):
    """Record its start and the highest priority of the ranked tasks still waiting in the table."""
    waiting = Session.scalar(select(func.max(Task.priority)).where(
        Task.status == "queued", Task.name == "ranked"))
    with _ranked_lock:
        RANKED_STARTS.append((ctx.task_id, rank, waiting))


@task("mail", schema=NoArgs, queue="mail", priority=7)
def mail(ctx):
    """A task of the "mail" queue, priority 7 unless its submit says otherwise."""
    return users.create_user(Session, name="mailed", age=1).id


class Slot(Schema):
    seconds = fields.Float(load_default=0.1)
    customer = fields.String(load_default="anyone")


def mark_slot(ctx, edge):
    """Record, in a transaction of its own, that an attempt of a limited task starts or ends, and when."""
    with session_scope() as session:
        users.create_user(session, name=f"slot {ctx.task_id}.{ctx.attempt} {edge} {time.time():.6f}",
                          age=1)


@task("limited", schema=Slot, concurrency=2)
def limited(ctx, seconds, customer):
    """At most two run at once, in every process together; each records its start and end."""
    mark_slot(ctx, "start")
    time.sleep(seconds)
    mark_slot(ctx, "end")


@task("per_customer", schema=Slot, concurrency=1, concurrency_key="customer")
def per_customer(ctx, seconds, customer):
    """One at a time per customer."""
    mark_slot(ctx, "start")
    time.sleep(seconds)
    mark_slot(ctx, "end")


STOPS = {}  # task id -> (what ctx said, the exception seen) for "tells_apart"


@task("tells_apart", schema=Seconds, max_attempts=1)
def tells_apart(ctx, seconds, name):
    """Sleep; on a stop, note whether it was a cancel or the time limit, and stop."""
    try:
        ctx.sleep(seconds)
    except TaskCancelled as stop:
        STOPS[ctx.task_id] = ("time limit" if ctx.timed_out else "cancel", type(stop).__name__)
        raise


@task("out_of_time_again", schema=Seconds, max_attempts=3, retry_on=(TimeLimitExceeded,))
def out_of_time_again(ctx, seconds, name):
    """Sleep past its time limit: retried, since its retry_on names TimeLimitExceeded."""
    ctx.sleep(seconds)


class Step(Schema):
    value = fields.Integer(load_default=0)
    seconds = fields.Float(load_default=0.0)
    fail = fields.Boolean(load_default=False)
    results = fields.List(fields.Raw(allow_none=True), load_default=None, allow_none=True)


FIXED = set()  # values of failing steps that succeed from now on (a retried workflow's)


@task("step", schema=Step, max_attempts=1)
def step(ctx, value, seconds, fail, results):
    """A workflow step: value plus what the steps before it returned (numbers, or lists of them)."""
    ctx.sleep(seconds)
    if fail and value not in FIXED:
        raise ValueError(f"step {value} failed")
    return value + sum(_total(each) for each in results or [])


def _total(value):
    return sum(_total(each) for each in value) if isinstance(value, list) else (value or 0)


class Failure(Schema):
    failure = fields.Dict(load_default=None, allow_none=True)


@task("report_failure", schema=Failure)
def report_failure(ctx, failure):
    """An on_error step: returns what failed."""
    return failure


class Rated(Schema):
    customer = fields.String(load_default="anyone")
    seconds = fields.Float(load_default=0.0)


@task("rated", schema=Rated, rate_limit="10/s")
def rated(ctx, customer, seconds):
    """At most 10 start in any second, in every process together."""
    time.sleep(seconds)


@task("rated_per_customer", schema=Rated, rate_limit="10/s", rate_key="customer")
def rated_per_customer(ctx, customer, seconds):
    """At most 10 start in any second per customer."""
    time.sleep(seconds)


@task("rated_slowly", schema=Rated, rate_limit="3/60s")
def rated_slowly(ctx, customer, seconds):
    """At most 3 start in any minute: the claim and start tests' limit."""


@task("rated_slowly_one_each", schema=Rated, rate_limit="3/60s", concurrency=1, concurrency_key="customer")
def rated_slowly_one_each(ctx, customer, seconds):
    """One at a time per customer, at most 3 starts in any minute for all customers together."""
    time.sleep(seconds)


class Customer(Schema):
    customer = fields.String(required=True)
    seconds = fields.Float(load_default=0.0)


@task("fair_per_customer", schema=Customer, fair_key="customer")
def fair_per_customer(ctx, customer, seconds):
    """Customers take turns: one's backlog does not hold up the others."""
    time.sleep(seconds)


@task("fair_urgent", schema=Customer, fair_key="customer", priority=5)
def fair_urgent(ctx, customer, seconds):
    """Fair, at a higher priority: its turns come before every fair_per_customer one."""
    time.sleep(seconds)
