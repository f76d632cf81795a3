"""`tasks queues`, `tasks pause QUEUE`, `tasks resume QUEUE`, `tasks remove-queue QUEUE`: the named queues."""
import click

from db import queues, session_scope
from service.cli import main
from service.cli.database import connected
from service.cli.errors import CommandError
from service.cli.text import stamp, table, to_json
from service.runner import registry
from db.queues import check_queue_name


def queue_name(ctx, param, value):
    try:
        return check_queue_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/queues).")
def list_queues(as_json):
    """Show every queue: paused or not, how many tasks wait, are reserved and run in it."""
    with connected() as settings:
        with session_scope() as session:
            found = queues.list_queues(session, registry.queues(settings["TASK_QUEUES"]))
    if as_json:
        click.echo(to_json(found))
        return
    click.echo("\n".join(table(
        ["QUEUE", "STATE", "QUEUED", "RESERVED", "RUNNING", "CHANGED"],
        [[q["name"], "PAUSED" if q["paused"] else "active", q["queued"], q["reserved"], q["running"],
          stamp(q["changed_at"])] for q in found])))


def switch(name, paused):
    with connected() as settings:
        known = registry.queues(settings["TASK_QUEUES"])
        with session_scope() as session:
            if not queues.queue_exists(session, name, known):
                names = [q["name"] for q in queues.list_queues(session, known)]
                raise CommandError(f"no queue named {name!r}; queues: {', '.join(names)}")
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


@main.command("remove-queue")
@click.argument("name", metavar="QUEUE", callback=queue_name)
def remove_queue(name):
    """Remove the record of QUEUE, which no task declares, TASK_QUEUES does not name and holds no task."""
    with connected() as settings:
        if name in registry.queues(settings["TASK_QUEUES"]):
            raise CommandError(f"queue {name!r} is declared by a task or configured; pause or resume it instead")
        with session_scope() as session:
            outcome = queues.remove_queue(session, name)
    if outcome == queues.NO_RECORD:
        raise CommandError(f"no record of a queue named {name!r}")
    if outcome == queues.IN_USE:
        raise CommandError(f"queue {name!r} holds unfinished tasks; cancel them or let them finish first")
    click.echo(f"queue {name} removed")
