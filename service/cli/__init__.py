"""The `tasks` command: submit, inspect, cancel, retry and prune tasks straight on DATABASE_URL.

No server is needed and no Flask app is made: every command works through the
db/ package and service.runner, as the API does, in short transactions of its own.
"""
import datetime as dt
import json

import click
from marshmallow import ValidationError

import service.worker
from db import session_scope, stats, task_views, tasks
from db.models import MAX_ID, STATES, utcnow
from service.cli.database import connected, find_task, read_settings
from service.cli.errors import CommandError, OneLineGroup, describe
from service.cli.text import brief, echo_page, span, stamp, stats_lines, task_lines, timings, to_json
from service.config import parse_duration
from service.runner import InvalidArguments, KeyReused, QueueFull, UnknownTask, actions, registry
from service.runner.rollup_and_prune import PRUNE_BATCH, forget_idle_limit_keys
from service.runner.registry import load_task_modules
from service.runner.submit import check_unique_key, enqueue_or_find
from service.schemas import TaskIn, TaskOut

OPTION_NAMES = {"name": "NAME", "args": "--args", "delay": "--delay", "run_at": "--run-at",
                "max_attempts": "--max-attempts", "time_limit": "--time-limit", "priority": "--priority"}


def refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def unique_key(ctx, param, value):
    try:
        return value if value is None else check_unique_key(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def read_submission(name, args_json, **options):
    """Check a submission as the API does, before the database is touched; return enqueue's arguments."""
    try:
        args = json.loads(args_json, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as error:
        raise click.UsageError(f"--args is not valid JSON: {error}") from None
    if not isinstance(args, dict):
        raise click.UsageError(f"--args must be a JSON object, not {type(args).__name__}")
    given = {key: value for key, value in options.items() if value is not None}
    if "delay" in given and "run_at" in given:
        raise click.UsageError("give --delay or --run-at, not both")
    try:
        data = TaskIn().load({"name": name, "args": args, **given})
        registry.get(name).normalize_args(args)
    except ValidationError as error:
        raise click.UsageError(describe(error.messages, OPTION_NAMES)) from None
    except UnknownTask as error:
        raise click.UsageError(str(error)) from None
    except InvalidArguments as error:
        raise click.UsageError(f"invalid --args for {name}: {describe(error.messages)}") from None
    return data


@click.group(name="tasks", cls=OneLineGroup)
def main():
    """Submit, inspect, cancel, retry and prune tasks on DATABASE_URL (no server needed)."""
    load_task_modules(read_settings())  # service.jobs and TASK_MODULES: every name a command may meet


@main.command()
@click.argument("name")
@click.option("--args", "args_json", default="{}", metavar="JSON",
              help="The task's arguments, a JSON object.")
@click.option("--delay", type=float, metavar="S", help="Seconds to wait before running.")
@click.option("--run-at", metavar="ISO8601", help="When to run (UTC if no offset); a past time runs now.")
@click.option("--max-attempts", type=int, metavar="N", help="Attempts before it fails (1-100).")
@click.option("--time-limit", type=float, metavar="S", help="Seconds before it is stopped.")
@click.option("--priority", type=int, metavar="P", help="-100 to 100, higher runs first (default: the task's).")
@click.option("--unique-key", metavar="KEY", callback=unique_key,
              help="While a task submitted with KEY is unfinished (or UNIQUE_WINDOW after), print its id instead.")
def submit(name, args_json, unique_key, **options):
    """Queue the task NAME and print its id; running workers pick it up."""
    data = read_submission(name, args_json, **options)
    with connected():
        try:
            with session_scope() as session:
                task, created = enqueue_or_find(session, **data, unique_key=unique_key)
        except QueueFull as error:
            raise CommandError(f"{error}; try again later") from None
        except KeyReused as error:
            raise CommandError(str(error)) from None
    if not created:
        click.echo(f"task {task.id} already holds this key ({task.status}); nothing added", err=True)
    click.echo(task.id)


@main.command("list")
@click.option("--status", type=click.Choice(STATES))
@click.option("--name")
@click.option("--page", type=click.IntRange(1, MAX_ID), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's task fields).")
def list_command(status, name, page, page_size, as_json):
    """List tasks, newest first, and how many match."""
    with connected():
        with session_scope() as session:
            found, total = tasks.list_tasks(session, page_size, (page - 1) * page_size, status, name)
            task_views.described(session, found)
    echo_page("tasks", found, total, page, page_size, as_json, TaskOut(many=True).dump,
              ["ID", "NAME", "STATUS", "ATTEMPTS", "PROGRESS", "CREATED", "NOTE"],
              lambda t: [t.id, t.name, t.status, f"{t.attempts}/{t.max_attempts}", f"{t.progress}%",
                         stamp(t.created_at), brief(t.error or t.message)])


@main.command()
@click.argument("task_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's task fields and the timings).")
def show(task_id, as_json):
    """Show every field of task ID and how long it waited and ran."""
    with connected():
        with session_scope() as session:
            task = task_views.described(session, [find_task(session, task_id)])[0]
    now = utcnow()
    if as_json:
        waited, ran = timings(task, now)
        click.echo(to_json({**TaskOut().dump(task), "waited_seconds": waited, "ran_seconds": ran}))
    else:
        click.echo("\n".join(task_lines(task, now)))


@main.command()
@click.argument("task_id", metavar="ID", type=int)
def cancel(task_id):
    """Cancel queued task ID, or ask it to stop if it runs."""
    with connected():
        with session_scope() as session:
            find_task(session, task_id)
            outcome, task = actions.cancel_task(session, task_id)
    if outcome is None:  # deleted in between
        raise CommandError(f"task {task_id} not found")
    if outcome == tasks.CANCEL_TOO_LATE:
        raise CommandError(f"task {task_id} already finished ({task.status}); too late to cancel")
    click.echo(f"task {task_id} cancelled" if outcome == tasks.CANCEL_DONE
               else f"task {task_id} is running; asked it to stop")


@main.command()
@click.argument("task_id", metavar="[ID]", type=int, required=False)
@click.option("--failed", is_flag=True, help="Retry every failed task (not retried yet).")
@click.option("--cancelled", is_flag=True, help="Retry every cancelled task (not retried yet).")
@click.option("--name", help="Only tasks of this name.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="The most tasks retried.")
@click.option("--dry-run", is_flag=True, help="Only count the tasks that match.")
def retry(task_id, failed, cancelled, name, limit, dry_run):
    """Retry task ID as a new task and print its id; or, with --failed/--cancelled, every match."""
    if (task_id is None) == (not failed and not cancelled):
        raise click.UsageError("give a task ID, or --failed and/or --cancelled")
    if task_id is not None and (name or dry_run):
        raise click.UsageError("--name and --dry-run go with --failed or --cancelled, not an ID")
    with connected():
        with session_scope() as session:
            if task_id is None:
                status = None if failed and cancelled else "failed" if failed else "cancelled"
                matched, retried = actions.retry_matching(session, status, name, limit, dry_run)
            else:
                new = retry_one(session, task_id)
    if task_id is None:
        click.echo(f"matched {matched}, retried {retried}" + (" (dry run)" if dry_run else ""))
    else:
        click.echo(new.id)


def retry_one(session, task_id):
    """Queue the retry of one task (not committed), or raise a one-line refusal."""
    find_task(session, task_id)
    try:
        new = actions.retry_task(session, task_id)
    except (actions.NotRetryable, UnknownTask, InvalidArguments, QueueFull) as error:
        raise CommandError(f"cannot retry task {task_id}: {error}") from None
    if new is None:  # deleted since it was found
        raise CommandError(f"task {task_id} not found")
    return new


class Duration(click.ParamType):
    """90s, 15m, 12h, 7d or 2w, in seconds (service.config.parse_duration)."""

    name = "duration"
    longest = dt.timedelta(days=100 * 365)  # further back than that, a cutoff leaves the calendar

    def convert(self, value, param, ctx):
        if isinstance(value, dt.timedelta):
            return value
        try:
            duration = dt.timedelta(seconds=parse_duration(value))
        except (ValueError, OverflowError) as error:
            self.fail(str(error), param, ctx)
        if duration > self.longest:
            self.fail(f"at most {self.longest.days}d, got {value!r}", param, ctx)
        return duration


@main.command()
@click.option("--older-than", type=Duration(), default="7d", show_default=True,
              help="Delete tasks finished longer ago than this (90s, 15m, 12h, 7d, 2w).")
def prune(older_than):
    """Delete finished tasks (keeping every count exact) and idle limit keys; print how many went."""
    with connected():
        # Only rolled-up tasks can go (their counts leave the totals with them).
        while True:
            with session_scope() as session:
                if not stats.roll_up(session):
                    break
        deleted = in_batches(stats.prune_finished, older_than)
        ended = in_batches(stats.prune_workflows, older_than)
        keys, after = forget_idle_limit_keys(older_than)
        while after is not None:
            forgotten, after = forget_idle_limit_keys(older_than, after)
            keys += forgotten
    margin = stats.ROLLUP_MARGIN
    kept = (f"; tasks finished in the last {span(margin.total_seconds())} stay until they are counted"
            if older_than < margin else "")
    idle = f", {ended} workflows as old" if ended else ""
    idle += f", and {keys} concurrency-limit keys as old with no queued or running task" if keys else ""
    click.echo(f"deleted {deleted} tasks finished more than {span(older_than.total_seconds())} ago{idle}{kept}")


def in_batches(prune_batch, older_than):
    """Call prune_batch(session, older_than, PRUNE_BATCH), each batch committed, until one is short; the total."""
    total = 0
    while True:
        with session_scope() as session:
            batch = prune_batch(session, older_than, PRUNE_BATCH)
        total += batch
        if batch < PRUNE_BATCH:
            return total


@main.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the whole overview).")
def stats_command(as_json):
    """Show counts per status and name, the queue, the last hour and the runner processes."""
    with connected() as settings:
        with session_scope() as session:
            overview = stats.overview(session, settings["TASK_LEASE"])
    click.echo(to_json(overview) if as_json else "\n".join(stats_lines(overview)))


@main.command()
def worker():
    """Run tasks in this process until SIGTERM or Ctrl-C (as python -m service.worker)."""
    with connected():  # refuse bad settings or a database that cannot run tasks before any thread starts
        pass
    service.worker.main()


from service.cli import queues  # noqa: E402,F401  tasks queues|pause|resume
from service.cli import schedules  # noqa: E402,F401  tasks schedules
from service.cli import workflows  # noqa: E402,F401  tasks workflow list|show|cancel|retry
