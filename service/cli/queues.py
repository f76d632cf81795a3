"""`tasks queues`, `tasks pause QUEUE`, `tasks resume QUEUE`: the named queues and their switch."""
import click

from db import queues, session_scope
from service.cli import main
from service.cli.database import connected
from service.cli.text import stamp, table, to_json
from service.runner import registry
from service.runner.registry import check_queue_name


def queue_name(ctx, param, value):
    try:
        return check_queue_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/queues).")
def list_queues(as_json):
    """Show every queue: paused or not, how many tasks wait and run in it."""
    with connected():
        with session_scope() as session:
            found = queues.list_queues(session, registry.queues())
    if as_json:
        click.echo(to_json(found))
        return
    click.echo("\n".join(table(
        ["QUEUE", "STATE", "QUEUED", "RUNNING", "CHANGED"],
        [[q["name"], "PAUSED" if q["paused"] else "active", q["queued"], q["running"],
          stamp(q["changed_at"])] for q in found])))


def switch(name, paused):
    with connected():
        with session_scope() as session:
            queues.set_paused(session, name, paused)
    click.echo(f"queue {name} " + ("paused: its tasks wait until it is resumed" if paused else "resumed"))


@main.command()
@click.argument("name", metavar="QUEUE", callback=queue_name)
def pause(name):
    """Pause QUEUE: no process starts its tasks (running ones finish); they wait, queued."""
    switch(name, True)


@main.command()
@click.argument("name", metavar="QUEUE", callback=queue_name)
def resume(name):
    """Resume QUEUE: its waiting tasks run again."""
    switch(name, False)
