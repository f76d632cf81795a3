"""The dashboard: server-rendered pages over the same data functions as the JSON API.

Each page polls its own `?part=1` fragment (the same template block) to stay
live, and every action it offers is a call to the JSON API.
"""
import datetime as dt
import json

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError

from db import Session, queues, stats, task_views, tasks
from db.models import FINISHED_STATES, RUNNING, STATES, utcnow
from service import auth
from service.runner import registry
from service.runner.scheduler import list_schedules
from service.schemas import TaskQuery

blp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                static_folder="static")
root = Blueprint("root", __name__)

PAGE_SIZE = 25
# The plot is height tall; the time axis's labels sit in the axis strip below it.
CHART = {"width": 600, "height": 120, "bar": 10, "axis": 18}
TICK_MINUTES = 10  # a time label on the chart's axis every this many minutes
# Computed, not listed: a state added to db.models.STATES (e.g. reserved) shows up by itself.
UNFINISHED_STATES = tuple(status for status in STATES if status not in FINISHED_STATES)
WAITING_STATES = tuple(status for status in UNFINISHED_STATES if status != RUNNING)
ARGS_SHOWN = 80  # characters of a task's arguments in the list; the title has the rest
ERROR_SHOWN = 120  # characters of the first line of a task's error in the list
TITLE_MAX = 2000  # a hover text longer than this is cut: the task's page has it all


@root.route("/")
def index():
    """The dashboard is the first thing a person sees."""
    return redirect(url_for("dashboard.overview"))


@root.route("/favicon.ico")
def favicon():
    """The icon, for clients that ask for /favicon.ico without reading the page's <link rel="icon">."""
    return redirect(url_for("dashboard.static", filename="favicon.svg"), 301)


@blp.context_processor
def template_constants():
    """The states the templates branch on (a new state needs no template edit), and text lengths."""
    return {"unfinished_states": UNFINISHED_STATES, "waiting_states": WAITING_STATES,
            "finished_states": FINISHED_STATES,
            "clip_at": {"args": ARGS_SHOWN, "error": ERROR_SHOWN, "title": TITLE_MAX}}


def page(template, **context):
    """Render a page, or only its live part when the page's poll asks for it (?part=1)."""
    if request.args.get("part"):
        template = template.replace(".html", "_part.html")
    return render_template(f"dashboard/{template}", **context)


@blp.route("")
def overview():
    """Counts, the last hour's finishes, the queue, the named queues, schedules and processes."""
    summary = stats.overview(Session, current_app.config["TASK_LEASE"])
    return page("overview.html", summary=summary, queues=queues.list_queues(Session, registry.queues()),
                schedules=list_schedules(Session, current_app.config["SCHEDULE_TZ"]),
                chart=chart(summary["finished_per_minute"]), now=summary["generated_at"])


@blp.route("/tasks")
def task_list():
    """Tasks by status and name, newest first, a page at a time."""
    return list_page("tasks.html", TaskQuery(), tasks.list_tasks, names=registry.names(), states=STATES)


def list_page(template, schema, list_rows, **context):
    """A list page: the filters schema reads from the query string, and one page of
    list_rows(Session, limit, offset, **filters); a bad filter is a 422 page that says why."""
    filters = {key: value for key, value in request.args.items() if key != "part" and value}
    context["now"] = utcnow()
    try:
        query = schema.load({**filters, "page_size": PAGE_SIZE})
    except ValidationError as error:
        return page(template, items=[], total=0, query=filters, pages=0, error=error.messages, **context), 422
    page_number = query.pop("page")
    query.pop("page_size")
    items, total = list_rows(Session, PAGE_SIZE, (page_number - 1) * PAGE_SIZE, **query)
    return page(template, items=items, total=total, query={**query, "page": page_number},
                pages=max(1, -(-total // PAGE_SIZE)), error=None, **context)


@blp.route("/tasks/<id:task_id>")
def task_detail(task_id):
    """One task: arguments, result, error and traceback, attempts, owner and timings."""
    task = tasks.get_task(Session, task_id)
    status = 200 if task is not None else 404
    if task is not None:
        task_views.described(Session, [task])  # task.workflow, task.rate
    return page("task.html", task=task, task_id=task_id, timings=timings(task),
                now=utcnow()), status


@blp.route("/submit")
def submit_form():
    """A form that submits a registered task through POST /api/tasks."""
    return render_template("dashboard/submit.html", names=registry.names())


def timings(task):
    """(waited in queue, ran for) in seconds, counting up to now while it still waits or runs."""
    if task is None:
        return None, None
    now = utcnow()
    # A waiting task's started_at is an earlier attempt's (if any): it waits again, and runs not yet.
    started = task.started_at if task.status not in WAITING_STATES else None
    waited = ((started or now) - task.run_after).total_seconds()
    ran = None if started is None else ((task.finished_at or now) - started).total_seconds()
    return max(0.0, waited), ran


def chart(per_minute):
    """Stacked SVG bars of finishes per minute: one bar per minute, one colour per status,
    over a time axis."""
    tallest = max([sum(m[s] for s in FINISHED_STATES) for m in per_minute] + [1])
    scale = (CHART["height"] - 10) / tallest
    bars = []
    for index, minute in enumerate(per_minute):
        bottom = CHART["height"]
        for status in FINISHED_STATES:
            height = minute[status] * scale
            if height:
                bars.append({"x": index * CHART["bar"], "y": bottom - height, "height": height,
                             "status": status, "count": minute[status], "minute": minute["minute"]})
            bottom -= height
    return {"bars": bars, "tallest": tallest, "ticks": ticks(per_minute), **CHART}


def ticks(per_minute):
    """The time axis's labels: every TICK_MINUTES-th minute (UTC here, local in the browser)."""
    return [{"x": index * CHART["bar"], "minute": minute["minute"]}
            for index, minute in enumerate(per_minute)
            if minute["minute"].minute % TICK_MINUTES == 0]


@blp.app_template_filter("age")
def age(when, now=None):
    """A time as how long ago it was: 3s, 4m 10s, 2h 5m, 3d 4h."""
    if when is None:
        return "–"
    return duration((now or utcnow()) - when)


@blp.app_template_filter("duration")
def duration(seconds):
    """Seconds (or a timedelta) in a short human form."""
    if seconds is None:
        return "–"
    if isinstance(seconds, dt.timedelta):
        seconds = seconds.total_seconds()
    seconds = max(0, int(seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                              ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


@blp.app_template_filter("pretty_json")
def pretty_json(value):
    """JSON indented for reading."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@blp.app_template_filter("utc")
def utc(when):
    """A stored (naive UTC) time as ISO 8601 with its offset."""
    return "–" if when is None else when.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


def naive_utc(when):
    """when as the columns store it: naive UTC (an aware time is converted first)."""
    return when if when.tzinfo is None else when.astimezone(dt.timezone.utc).replace(tzinfo=None)


@blp.app_template_filter("iso_z")
def iso_z(when):
    """A time as ISO 8601 in UTC ending in Z, what a <time datetime> and JS's Date read."""
    return naive_utc(when).isoformat(timespec="seconds") + "Z"


def utc_text(when):
    """A time as a person reads it in UTC: 2026-01-01 09:00:00 UTC."""
    return naive_utc(when).strftime("%Y-%m-%d %H:%M:%S UTC")


@blp.app_template_filter("time")
def time_tag(when):
    """A <time> in UTC that dashboard.js rewrites to the browser's local time; UTC stays on hover."""
    if when is None:
        return "–"
    return Markup('<time datetime="{}" title="{}" data-local="datetime">{}</time>').format(
        iso_z(when), utc_text(when), utc_text(when))


@blp.app_template_filter("ago")
def ago(when, now=None):
    """How long ago a time was (4m 10s ago), with the exact UTC time on hover."""
    if when is None:
        return "–"
    return Markup('<time datetime="{}" title="{}">{} ago</time>').format(
        iso_z(when), utc_text(when), age(when, now))


@blp.app_template_filter("compact_json")
def compact_json(value):
    """JSON on one line, without the spaces, for a table cell."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@blp.app_template_filter("first_line")
def first_line(text):
    """The first non-blank line of a text (an error's message, not its traceback)."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


@blp.app_template_filter("clip")
def clip(text, limit):
    """text cut to limit characters, ending in … when cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


@blp.route("/signin", methods=["GET", "POST"])
def sign_in():
    """Trade an API token for a signed session cookie (only when API_TOKENS is set)."""
    tokens = current_app.config["API_TOKENS"]
    if not tokens:
        return redirect(url_for("dashboard.overview"))
    error, status = None, 200
    if request.method == "POST":
        if not auth.csrf_valid():
            error, status = "The form expired; try again.", 400
        elif auth.sign_in(request.form.get("token", ""), tokens):
            return redirect(safe_next(request.args.get("next")))
        else:
            error, status = "That token is not valid.", 401
    return render_template("dashboard/signin.html", error=error), status


@blp.route("/signout", methods=["POST"])
def sign_out():
    """End the session (the form carries the CSRF token, checked before this runs)."""
    auth.sign_out()
    return redirect(url_for("dashboard.sign_in"))


def safe_next(target):
    """Where to go after signing in: a path of the dashboard, never another site."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return url_for("dashboard.overview")


# The workflow pages register their views on blp (imported last: they use what is above).
from service.dashboard import workflows  # noqa: E402, F401
