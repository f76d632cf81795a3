"""Bench part "flow": what rate limits cost the tasks they do not limit, and fair share.

A worker process (make worker, 4 threads) drains plain no-op tasks three ways, taking
turns for ROUNDS rounds, best of each: declaring no limit (the floor); declaring a
rate-limited task with none of its tasks waiting; and with 2,000 of them waiting at 10/s
in the same queue, so every claim also takes the limited step. Each drain is timed from the first plain
task's start to the last one's finish.

Fair share, with a worker that declares a fair task: the drain of as many fair no-op
tasks of 20 customers (against the floor), and the fairness figure: customer A queues
10,000, then customer B queues 10 while A's drain; how long till B's last one starts and
how many of A's started before it.
"""
import contextlib
import os
import time

from sqlalchemy import func, select

import db
from db import tasks
from db.models import SUCCEEDED, Task
from db.models import utcnow
from service.runner import registry, task_rows
from service.runner.task_rows import task_row
from tests.bench import flow_fair, flow_rated  # noqa: F401  flow_fair: its task, known here too
from tests.server import Worker

WAITING = 2000  # rate-limited tasks queued beside the plain ones
ROUNDS = 5
MODES = (("none", "tests.bench.flow_plain", 0), ("declared", "tests.bench.flow_rated", 0),
         ("waiting", "tests.bench.flow_rated", WAITING))
BACKLOG, LATE = 10_000, 10  # fairness: A's backlog, then B's tasks


def bench_flow(url, kind, total, log_dir, reset):
    """Plain drain t/s per mode (best of ROUNDS), and each mode's ratio to the floor.

    The modes take turns round by round (a worker started for each drain), so a slow spell
    of the machine falls on all of them, not on one mode's rounds."""
    runs = {mode: [] for mode in (*(mode for mode, _, _ in MODES), "fair")}
    for _ in range(ROUNDS):
        for mode, modules, waiting in MODES:
            with _worker(url, kind, log_dir, modules):
                reset()
                runs[mode].append(drain(total, waiting))
        with _worker(url, kind, log_dir, "tests.bench.flow_fair"):
            reset()
            runs["fair"].append(drain_fair(total))
    with _worker(url, kind, log_dir, "tests.bench.flow_fair"):
        reset()
        turns = fairness()
    best = {mode: max(rates) for mode, rates in runs.items()}
    return {"total": total, "waiting": WAITING, "rate": flow_rated.RATE, "runs": runs,
            "tasks_per_s": {mode: round(rate, 1) for mode, rate in best.items()},
            "ratio": {mode: round(best[mode] / best["none"], 2) for mode in ("declared", "waiting", "fair")},
            "turns": turns}


@contextlib.contextmanager
def _worker(url, kind, log_dir, modules):
    """A worker process (4 threads) that imports modules, for the block."""
    worker = Worker(url, os.path.join(log_dir, f"{kind}-flow-worker.log"), TASK_WORKERS=4,
                    TASK_MODULES=modules, LOG_LEVEL="WARNING").start()
    try:
        yield worker
    finally:
        worker.stop()


def drain_fair(total):
    """Queue total fair tasks of 20 customers (each customer's in a row); their t/s."""
    spec = registry.get("flow_fair")
    with db.session_scope() as session:
        ids = [task.id for task in task_rows.insert_rows(
            session, [task_row(spec, {"customer": f"c{n * 20 // total}"}) for n in range(total)])]
    first, last = wait_done(ids)
    return total / (last - first).total_seconds()


def fairness():
    """A queues BACKLOG fair tasks, then B queues LATE once A's are running: (seconds till B's
    last start, A's tasks started before it)."""
    spec = registry.get("flow_fair")
    with db.session_scope() as session:
        backlog = [task.id for task in task_rows.insert_rows(session, [task_row(spec, {"customer": "a"})] * BACKLOG)]
    while started(backlog) < 20:
        time.sleep(0.01)
    submitted = utcnow()
    with db.session_scope() as session:
        late = [task.id for task in task_rows.insert_rows(session, [task_row(spec, {"customer": "b"})] * LATE)]
    while started(late) < LATE:
        time.sleep(0.01)
    with db.session_scope() as session:
        last = session.scalar(select(func.max(Task.started_at)).where(Task.id.between(min(late), max(late))))
        ahead = session.scalar(select(func.count()).where(Task.id.between(min(backlog), max(backlog)), Task.started_at < last))
    wait_done(backlog + late)
    return round((last - submitted).total_seconds(), 3), ahead


def started(ids):
    with db.session_scope() as session:
        return session.scalar(select(func.count()).where(Task.id.between(min(ids), max(ids)), Task.started_at.is_not(None)))


def wait_done(ids):
    """(first start, last finish) of the tasks ids once all succeeded."""
    deadline = time.monotonic() + 600
    while True:
        with db.session_scope() as session:
            count, first, last = session.execute(
                select(func.count(), func.min(Task.started_at), func.max(Task.finished_at))
                .where(Task.id.between(min(ids), max(ids)), Task.status == SUCCEEDED)).one()
        if count >= len(ids):
            return first, last
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids)} tasks did not finish")
        time.sleep(0.1)


def drain(total, waiting):
    """Queue waiting rate-limited tasks, then total plain ones; the plain ones' t/s."""
    with db.session_scope() as session:
        if waiting:
            row = task_row(registry.get("flow_rated"), {})
            tasks.insert_tasks(session, [row] * waiting)
        tasks.insert_tasks(session, [{"name": "flow_noop", "args": {}}] * total)
    deadline = time.monotonic() + 600
    while done(total) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{total} plain tasks did not finish")
        time.sleep(0.1)
    first, last = done(total)
    return total / (last - first).total_seconds()


def done(total):
    """(first start, last finish) of the plain tasks once all succeeded, else None."""
    with db.session_scope() as session:
        count, first, last = session.execute(
            select(func.count(), func.min(Task.started_at), func.max(Task.finished_at))
            .where(Task.name == "flow_noop", Task.status == SUCCEEDED)).one()
    return (first, last) if count >= total else None


def report_rows(r):
    rate = r["tasks_per_s"]
    return [
        ("plain drain, a rate limit declared", rate["declared"], f"none declared {rate['none']} t/s",
         f"x{r['ratio']['declared']} (target >= 0.9)"),
        (f"  with {r['waiting']} limited waiting ({r['rate']})", rate["waiting"], "",
         f"x{r['ratio']['waiting']} (target >= 0.9), best of {len(r['runs']['none'])}"),
        ("  rounds: none / declared / waiting", " ".join(str(round(x)) for x in r["runs"]["none"]),
         " ".join(str(round(x)) for x in r["runs"]["declared"]),
         " ".join(str(round(x)) for x in r["runs"]["waiting"])),
        ("fair drain (20 keys)", rate["fair"], f"none declared {rate['none']} t/s",
         f"x{r['ratio']['fair']}, rounds {' '.join(str(round(x)) for x in r['runs']['fair'])}"),
        (f"  B's {LATE} behind A's {BACKLOG}: last start after", f"{r['turns'][0]} s",
         f"{r['turns'][1]} of A's before it", "target < 2 s"),
    ]
