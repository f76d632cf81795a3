"""How the commands show tasks and counts as text (and JSON)."""
import datetime as dt
import json

import click

from db.models import FINISHED_STATES, QUEUED, RESERVED, RUNNING, STATES


def stamp(value, precise=False):
    """A stored (naive UTC) time as text."""
    if value is None:
        return "-"
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"{text[:-3] if precise else text[:-7]} UTC"


def span(seconds):
    """A duration as people read it: 0.42s, 12.3s, 4m 05s, 2h, 3d 04h."""
    seconds = max(0.0, seconds)  # another host's clock may run a little ahead of ours
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    unit, rest = ((f"{days}d", f"{hours:02d}h") if days else (f"{hours}h", f"{minutes:02d}m") if hours
                  else (f"{minutes}m", f"{secs:02d}s"))
    return unit if rest.startswith("00") else f"{unit} {rest}"


def brief(text, width=50):
    """One line of at most width characters."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def table(headers, rows):
    """Lines of a plain-text table, each column as wide as its widest cell."""
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]


def to_json(value):
    """JSON text with times as the API writes them (ISO 8601, UTC)."""
    def default(item):
        if isinstance(item, dt.datetime):
            return item.replace(tzinfo=dt.timezone.utc).isoformat()
        raise TypeError(f"{type(item).__name__} is not JSON")
    return json.dumps(value, indent=2, default=default, ensure_ascii=False)


def timings(task, now):
    """(seconds waited in the queue, seconds run), each None where it does not apply.

    started_at and the other times belong to the latest attempt: a queued task's
    started_at, if it has one, is an earlier attempt's; a reserved one has not started.
    """
    waiting = task.status in (QUEUED, RESERVED)
    started = task.started_at is not None and not waiting and task.started_at >= task.run_after
    if started:
        return ((task.started_at - task.run_after).total_seconds(),
                ((task.finished_at or now) - task.started_at).total_seconds())
    waited = ((task.finished_at if task.finished else now) - task.run_after).total_seconds()
    return (waited if waited >= 0 else None), None


def task_lines(task, now):
    """Every field of a task, one per line, its traceback last."""
    waited, ran = timings(task, now)
    if waited is None and task.status == QUEUED:
        waited_text = f"not due yet (due in {span((task.run_after - now).total_seconds())})"
    else:
        waited_text = "-" if waited is None else span(waited) + (" so far" if task.status in (QUEUED, RESERVED) else "")
    fields = [
        ("id", task.id), ("name", task.name), ("status", task.status),
        ("queue", task.queue), ("priority", task.priority),
        ("attempts", f"{task.attempts} of {task.max_attempts}"),
        ("progress", f"{task.progress}%"), ("message", task.message or "-"),
        ("args", json.dumps(task.args, ensure_ascii=False)),
        ("result", "-" if task.result is None else json.dumps(task.result, ensure_ascii=False)),
        ("error", task.error or "-"),
        ("time limit", "none" if task.time_limit is None else span(task.time_limit)),
        ("cancel requested", "yes" if task.cancel_requested else "no"),
        ("owner", task.owner or "-"),
        ("created", stamp(task.created_at, True)), ("run after", stamp(task.run_after, True)),
        ("started", stamp(task.started_at, True)), ("finished", stamp(task.finished_at, True)),
        ("heartbeat", stamp(task.heartbeat_at, True)),
        ("waited in queue", waited_text),
        ("ran for", "-" if ran is None else span(ran) + (" so far" if task.status == RUNNING else "")),
        ("retry of", task.retry_of or "-"), ("retried by", task.retried_by or "-"),
        ("workflow", task.workflow or "-"),
        ("rate limit", rate_text(task.rate)),
        ("fair share", fair_text(task.fair)),
    ]
    lines = [f"{label + ':':<17} {value}" for label, value in fields]
    if task.traceback:
        lines += ["traceback:", *("  " + line for line in task.traceback.rstrip().splitlines())]
    return lines


def fair_text(fair):
    """A fair task's key and turn, in a line ("-": not a fair task)."""
    if fair is None:
        return "-"
    return f"key {fair['key']}" + ("" if fair["ahead"] is None else f"; {fair['ahead']} fair tasks ahead of it")


def rate_text(rate):
    """A task's rate limit and its use, in a line ("-": none)."""
    if rate is None:
        return "-"
    text = f"{rate['starts']} starts per {span(rate['seconds'])}, key {rate['key']}"
    if rate["started"] is not None:
        text += f"; {rate['started']} started in the last {span(rate['seconds'])}"
    if rate.get("waiting"):
        text += "; waiting for its rate limit" + (f", room at {stamp(rate['room_at'], True)}" if rate["room_at"] else "")
    return text


def stats_lines(overview):
    """The overview of db.stats as text."""
    statuses = overview["statuses"]
    lines = ["tasks: " + ", ".join(f"{statuses[s]} {s}" for s in STATES)]
    queue = overview["queue"]
    oldest = queue["oldest_due_age"]
    lines.append(f"queue: {queue['queued']} queued, {queue['due']} due"
                 + ("" if oldest is None else f", the oldest due for {span(oldest)}"))
    hour = {s: sum(minute[s] for minute in overview["finished_per_minute"]) for s in FINISHED_STATES}
    lines.append(f"finished in the last hour: {sum(hour.values())} ("
                 + ", ".join(f"{n} {s}" for s, n in hour.items()) + ")")
    if overview["names"]:
        lines += ["", *table(["NAME", *(s.upper() for s in STATES)],
                             [[row["name"], *(row[s] for s in STATES)] for row in overview["names"]])]
    if overview["rate_limits"]:
        lines += ["", *table(["RATE KEY", "LIMIT", "STARTED IN WINDOW", "RESERVED", "QUEUED", "ROOM"],
                             [[r["key"], f"{r['starts']}/{span(r['seconds'])}", r["started"], r["reserved"],
                               r["queued"], ("full till " + stamp(r["room_at"], True)) if r["room_at"]
                               else "full" if r["full"] else "free"] for r in overview["rate_limits"]])]
    now, runners = overview["generated_at"], overview["runners"]
    lines += ["", f"runners: {len(runners)} ({sum(r['lost'] for r in runners)} lost;"
                  f" lost means no heartbeat for {overview['lease']:g}s)"]
    if runners:
        lines += table(["OWNER", "BUSY", "STARTED", "HEARTBEAT", "STATE"],
                       [[r["owner"], f"{r['busy']}/{r['workers']}", stamp(r["started_at"]),
                         f"{span((now - r['heartbeat_at']).total_seconds())} ago",
                         "LOST" if r["lost"] else "alive"] for r in runners])
    return lines


def echo_page(noun, found, total, page, page_size, as_json, dump, headers, row):
    """One page of a listing: JSON ({noun: dump(found), total, page, page_size}), or a table of
    row(each) under headers and a line of how many match."""
    if as_json:
        click.echo(to_json({noun: dump(found), "total": total, "page": page, "page_size": page_size}))
        return
    if found:
        click.echo("\n".join(table(headers, [row(each) for each in found])))
    pages = max(1, -(-total // page_size))
    click.echo(f"{total} {noun}" + (f", page {page} of {pages}" if total else ""))
