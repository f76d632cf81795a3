"""Bench part "workflow": chords on the bench server, and the same chords on plain Celery.

Ours: a 1,000-member chord of no-op tasks (POST /api/workflows) drained next to 1,000
plain no-op tasks queued at once on the same server, alternating, best of each, each
timed from the first member's start to the last member's finish; then 20 small chords
one after another, each timed from its last member's finished_at to its callback's
created_at (the row the ending commit inserts) and started_at.

Plain Celery: the same chords with Celery's own chord on tests.bench.plain_celery's app
(Redis broker and result backend, -P threads -c 4), next to the same members as a plain
group. Celery keeps no timestamps, so the tasks return theirs (time.time()) and the
callback's publish is stamped in Redis by a signal; this module is loaded into the
worker with --include for that.
"""
import statistics
import sys
import time

import redis
from celery import chord, group, signals
from sqlalchemy import delete, func, select

import db
from db.models import SUCCEEDED, Task, Workflow, WorkflowNode
from tests.bench import plain_celery
from tests.bench.client import percentile
from tests.server import Process

MEMBERS = 1000
CHORDS = 20
CHORD_MEMBERS = 20
ROUNDS = 3
NOOP = "bench_noop"  # service.bench's no-op task, registered in BENCH_MODE
MEMBER = "plain.chord_member"
CALLBACK = "plain.chord_callback"
PUBLISHED = "bench:published:"  # + the callback's task id: when its message was sent


# --- plain Celery's tasks (run in its worker) ---

def marks():
    """The Redis database where the callback's publish time is kept (the result backend's)."""
    return redis.Redis.from_url(plain_celery.app.conf.result_backend)


@plain_celery.app.task(name=MEMBER)
def member():
    """Do nothing; return when it started and finished."""
    started = time.time()
    return [started, time.time()]


@plain_celery.app.task(name=CALLBACK)
def callback(results):
    """Return when it started, with its members' first start and last finish."""
    started = time.time()
    return {"started": started, "first_start": min(r[0] for r in results),
            "last_finish": max(r[1] for r in results)}


@signals.after_task_publish.connect
def stamp_callback(sender=None, headers=None, **kwargs):
    """Record when a callback's message reached the broker: Celery's counterpart of our row insert."""
    if sender == CALLBACK:
        marks().set(PUBLISHED + headers["id"], time.time(), ex=3600)


# --- ours ---

def bench_workflow(server, url, log_dir, reset, queue_directly, wait_drained, total=MEMBERS,
                   chords=CHORDS, rounds=ROUNDS):
    """Our chords' drain and callback delay, and plain Celery's beside them."""
    def clear():
        reset()
        with db.session_scope() as session:  # reset() empties tasks only, and their ids restart
            session.execute(delete(WorkflowNode))
            session.execute(delete(Workflow))

    result = ours(server, total, chords, rounds, clear, queue_directly, wait_drained)
    result["celery"] = celery_side(url, log_dir, total, chords, rounds)
    return result


def ours(server, total, chords, rounds, clear, queue_directly, wait_drained):
    """A big chord's members against plain tasks, alternating, best of each; then small chords' delays."""
    plain, chorded = [], []
    for _ in range(rounds):
        plain.append(plain_round(total, clear, queue_directly, wait_drained))
        chorded.append(chord_round(server, total, clear))
    clear()
    # The first chord is not timed, as on Celery's side, where it opens the worker's connections.
    delays = [chord_delays(server, CHORD_MEMBERS) for _ in range(chords + 1)][1:]
    return {"members": total, "rounds": rounds, "chords": chords, "chord_members": CHORD_MEMBERS,
            "plain_tasks_per_s": round(max(plain), 1), "chord_tasks_per_s": round(max(chorded), 1),
            "ratio": round(max(chorded) / max(plain), 2),
            "plain_runs": [round(x) for x in plain], "chord_runs": [round(x) for x in chorded],
            "callback_start_ms": spread_ms([start for start, _ in delays]),
            "callback_insert_ms": spread_ms([insert for _, insert in delays])}


def plain_round(total, clear, queue_directly, wait_drained):
    """Tasks/s of total plain no-op tasks queued at once, first start to last finish."""
    clear()
    queue_directly(total, name=NOOP, args={})
    wait_drained(total, interval=0.1)
    with db.session_scope() as session:
        first, last = session.execute(select(func.min(Task.started_at), func.max(Task.finished_at))).one()
    return total / (last - first).total_seconds()


def chord_round(server, total, clear):
    """Tasks/s of a total-member chord's members, first member's start to last member's finish."""
    clear()
    members, _ = run_chord(server, total)
    first = min(started for started, _ in members)
    last = max(finished for _, finished in members)
    return total / (last - first).total_seconds()


def chord_delays(server, size):
    """One chord of size members: ms from its last member's finish to its callback's start and insert."""
    members, (created, started) = run_chord(server, size)
    last = max(finished for _, finished in members)
    return (started - last).total_seconds() * 1000, (created - last).total_seconds() * 1000


def run_chord(server, size):
    """Submit a chord of no-ops, wait for it; its members' (started_at, finished_at) and its
    callback's (created_at, started_at)."""
    body = {"chord": {"group": [{"name": NOOP}] * size, "then": {"name": NOOP}}}
    status, _, answer = server.request("POST", "/api/workflows", body)
    if status != 202:
        raise RuntimeError(f"POST /api/workflows answered {status}: {answer}")
    wait_workflow(answer["id"])
    return chord_times(answer["id"])


def wait_workflow(workflow_id, timeout=120):
    """Until the workflow succeeded; fails at once if it ended otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        with db.session_scope() as session:
            status = session.scalar(select(Workflow.status).where(Workflow.id == workflow_id))
        if status == SUCCEEDED:
            return
        if status != "running" or time.monotonic() > deadline:
            raise RuntimeError(f"workflow {workflow_id} is {status}")
        time.sleep(0.02)


def chord_times(workflow_id):
    """A finished chord's members' (started_at, finished_at) and its callback's (created_at, started_at)."""
    with db.session_scope() as session:
        root = session.scalar(select(WorkflowNode.id).where(WorkflowNode.workflow_id == workflow_id,
                                                            WorkflowNode.parent_id.is_(None)))
        rows = session.execute(
            select(WorkflowNode.parent_id, Task.created_at, Task.started_at, Task.finished_at)
            .join(Task, Task.id == WorkflowNode.task_id)
            .where(WorkflowNode.workflow_id == workflow_id, WorkflowNode.kind == "task")).all()
    # The callback is the chord's own task step; every other task step is a member of its group.
    [then] = [(created, started) for parent, created, started, _ in rows if parent == root]
    members = [(started, finished) for parent, _, started, finished in rows if parent != root]
    return members, then


def spread_ms(values):
    """p50 / p99 of values in ms."""
    return {"p50": round(statistics.median(values), 1), "p99": round(percentile(values, 0.99), 1),
            "n": len(values)}


# --- plain Celery ---

def celery_side(url, log_dir, total, chords, rounds):
    """Plain Celery's chord against its own group of the same members, and its callback delays."""
    try:
        marks().ping()
    except redis.ConnectionError:
        return {"skipped": "no Redis at " + plain_celery.app.conf.result_backend}
    grouped, chorded = [], []
    for _ in range(rounds):
        grouped.append(celery_drain(url, log_dir, total, chorded=False))
        chorded.append(celery_drain(url, log_dir, total, chorded=True))
    with PlainWorker(url, log_dir):
        # The first chord after the worker starts opens its connections: not timed.
        delays = [celery_delays(CHORD_MEMBERS) for _ in range(chords + 1)][1:]
    return {"group_tasks_per_s": round(max(grouped), 1), "chord_tasks_per_s": round(max(chorded), 1),
            "ratio": round(max(chorded) / max(grouped), 2),
            "group_runs": [round(x) for x in grouped], "chord_runs": [round(x) for x in chorded],
            "callback_start_ms": spread_ms([start for start, _ in delays]),
            "callback_publish_ms": spread_ms([publish for _, publish in delays])}


class PlainWorker:
    """A plain Celery worker (-P threads -c 4) with this module's tasks, for a with block;
    ready=False does not wait for it to answer (its queue is already full)."""

    def __init__(self, url, log_dir, ready=True):
        self.ready = ready
        self.process = Process([sys.executable, "-m", "celery", "-A", "tests.bench.plain_celery", "worker",
                                "--include", __name__, "-Q", "plain", "-P", "threads", "-c", "4",
                                "-n", "workflow@%h", "--without-gossip", "--without-mingle",
                                "--loglevel", "WARNING"], url, log_dir / "workflow-celery.log")

    def __enter__(self):
        self.process.start()
        if self.ready:
            wait_ready()
        return self

    def __exit__(self, *exc):
        self.process.stop()


def wait_ready(timeout=30):
    """Until a worker answers a ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if plain_celery.app.control.ping(timeout=0.5):
            return
    raise RuntimeError("no Celery worker answered")


def flush():
    """Empty the plain app's broker and result backend."""
    for broker_or_backend in (plain_celery.app.conf.broker_url, plain_celery.app.conf.result_backend):
        redis.Redis.from_url(broker_or_backend).flushdb()


def celery_drain(url, log_dir, total, chorded):
    """Tasks/s of total members, as a chord or a plain group, first start to last finish.

    Every message is published before the worker starts, as our members are all
    committed before the first starts: publishing is not what is timed.
    """
    flush()
    members = group(member.s() for _ in range(total))
    pending = (chord(members, callback.s()) if chorded else members).apply_async()
    with PlainWorker(url, log_dir, ready=False):
        answer = pending.get(timeout=300)
    if chorded:
        first, last = answer["first_start"], answer["last_finish"]
    else:
        first, last = min(r[0] for r in answer), max(r[1] for r in answer)
    return total / (last - first)


def celery_delays(size):
    """One Celery chord of size members: ms from its last member's finish to its callback's start
    and to its callback's publish."""
    pending = chord(group(member.s() for _ in range(size)), callback.s()).apply_async()
    answer = pending.get(timeout=60)
    published = float(marks().get(PUBLISHED + pending.id))
    return ((answer["started"] - answer["last_finish"]) * 1000,
            (published - answer["last_finish"]) * 1000)


def report_rows(r):
    """The table's rows for the workflow part."""
    start, insert = r["callback_start_ms"], r["callback_insert_ms"]
    rows = [
        (f"chord of {r['members']:,}: members t/s", r["chord_tasks_per_s"], f"plain {r['plain_tasks_per_s']} t/s",
         f"x{r['ratio']} (target >= 0.9), best of {r['rounds']}"),
        ("  rounds: chord / plain", " ".join(map(str, r["chord_runs"])), " ".join(map(str, r["plain_runs"])), ""),
        ("chord callback start (ms)", f"{start['p50']} / {start['p99']}", "after last member, p50 / p99",
         f"{r['chords']} chords of {r['chord_members']}"),
        ("chord callback row insert (ms)", f"{insert['p50']} / {insert['p99']}", "after last member, p50 / p99", ""),
    ]
    c = r["celery"]
    if "skipped" in c:
        return rows + [("plain Celery chord", "skipped", "", c["skipped"])]
    start, publish = c["callback_start_ms"], c["callback_publish_ms"]
    return rows + [
        ("plain Celery chord: members t/s", c["chord_tasks_per_s"], f"its group {c['group_tasks_per_s']} t/s",
         f"x{c['ratio']}; ours x{round(r['chord_tasks_per_s'] / c['chord_tasks_per_s'], 2)} of its chord"),
        ("  rounds: chord / group", " ".join(map(str, c["chord_runs"])), " ".join(map(str, c["group_runs"])), ""),
        ("plain Celery callback start (ms)", f"{start['p50']} / {start['p99']}", "after last member, p50 / p99",
         f"{r['chords']} chords of {r['chord_members']}"),
        ("plain Celery callback publish (ms)", f"{publish['p50']} / {publish['p99']}",
         "after last member, p50 / p99", ""),
    ]
