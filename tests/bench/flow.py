"""Bench part "flow": what rate limits cost the tasks they do not limit.

A worker process (make worker, 4 threads) drains plain no-op tasks three ways, a few
rounds each, best of each: declaring no limit (the floor); declaring a rate-limited task
with none of its tasks waiting; and with 2,000 of them waiting at 10/s in the same queue,
so every claim also takes the limited step. Each drain is timed from the first plain
task's start to the last one's finish.
"""
import os
import time

from sqlalchemy import func, select

import db
from db import tasks
from db.models import SUCCEEDED, Task
from service.runner import registry
from service.runner.task_rows import task_row
from tests.bench import flow_rated
from tests.server import Worker

WAITING = 2000  # rate-limited tasks queued beside the plain ones
ROUNDS = 3
MODES = (("none", "tests.bench.flow_plain", 0), ("declared", "tests.bench.flow_rated", 0),
         ("waiting", "tests.bench.flow_rated", WAITING))


def bench_flow(url, kind, total, log_dir, reset):
    """Plain drain t/s per mode (best of ROUNDS), and each mode's ratio to the floor."""
    runs = {mode: [] for mode, _, _ in MODES}
    for mode, modules, waiting in MODES:
        worker = Worker(url, os.path.join(log_dir, f"{kind}-flow-worker.log"), TASK_WORKERS=4,
                        TASK_MODULES=modules, LOG_LEVEL="WARNING").start()
        try:
            for _ in range(ROUNDS):
                reset()
                runs[mode].append(drain(total, waiting))
        finally:
            worker.stop()
    best = {mode: max(rates) for mode, rates in runs.items()}
    return {"total": total, "waiting": WAITING, "rate": flow_rated.RATE, "runs": runs,
            "tasks_per_s": {mode: round(rate, 1) for mode, rate in best.items()},
            "ratio": {mode: round(best[mode] / best["none"], 2) for mode in ("declared", "waiting")}}


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
    ]
