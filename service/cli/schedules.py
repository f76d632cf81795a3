"""`tasks schedules`: the recurring tasks, their last run and next slot."""
import json

import click

from db import session_scope
from service.cli import main
from service.cli.database import connected
from service.cli.text import stamp, table, to_json
from service.runner.scheduler import list_schedules


@main.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/schedules).")
def show_schedules(as_json):
    """Show every recurring task: its schedule, arguments, last run and next slot."""
    with connected() as settings:
        with session_scope() as session:
            found = list_schedules(session, settings["SCHEDULE_TZ"])
    if as_json:
        click.echo(to_json(found))
        return
    if not found:
        click.echo("no recurring tasks (declare one with @task(..., cron=...) or every=...)")
        return
    click.echo("\n".join(table(
        ["TASK", "SCHEDULE", "TZ", "LAST RUN", "TASK ID", "NEXT RUN", "ARGS"],
        [[s["name"], s["schedule"], s["timezone"], stamp(s["last_run_at"]),
          s["last_task_id"] if s["last_task_id"] is not None else "-", stamp(s["next_run_at"]),
          json.dumps(s["args"], separators=(",", ":"))] for s in found])))
