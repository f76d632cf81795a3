"""Submit -> start across two processes: this process queues tasks one at a time (the
article's create_user, no delay), a worker process (make worker, polling every
TASK_POLL_INTERVAL = 0.5 s) runs them.

On PostgreSQL it runs twice: with the tasks table's NOTIFY triggers (the worker LISTENs and
claims at once) and with them disabled (the worker finds each task at its next poll, as on
the other databases). Each task's latency is its started_at minus its created_at.
"""
import os
import random
import statistics
import time

from sqlalchemy import func, select, text

import db
from db import tasks
from db.models import SUCCEEDED, RunnerRecord, Task
from tests.server import Worker

TRIGGERS = ("tasks_queued_insert", "tasks_queued_update")
GAP = (0.02, 0.08)  # seconds between submits, drawn at random so they fall anywhere in a poll


def bench_wakeup(url, kind, total, log_dir, reset):
    """p50/p99 submit -> start without wake-ups across processes, and with them where the
    database has them (PostgreSQL)."""
    modes = (("with", True), ("without", False)) if kind == "postgres" else (("without", False),)
    results = {}
    for mode, notify in modes:
        reset()
        set_notify_triggers(notify, kind)
        worker = Worker(url, os.path.join(log_dir, f"{kind}-wakeup-worker.log"), TASK_WORKERS=2,
                        LOG_LEVEL="WARNING").start()
        try:
            wait_until(lambda: ready(kind, worker.proc.pid), "the worker to start")
            results[mode] = measure(total)
        finally:
            worker.stop()
            set_notify_triggers(True, kind)
    return results


def set_notify_triggers(enabled, kind):
    """Switch the NOTIFY triggers on or off (PostgreSQL only)."""
    if kind != "postgres":
        return
    with db.session_scope() as session:
        for trigger in TRIGGERS:
            session.execute(text(f"ALTER TABLE tasks {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}"))


def ready(kind, pid):
    """The worker process heartbeats and, on PostgreSQL, listens."""
    with db.session_scope() as session:
        started = session.scalar(select(func.count()).where(RunnerRecord.pid == pid)) > 0
        if kind == "postgres":
            started = started and session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN tasks_queued'")) > 0
    return started


def wait_until(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def measure(total):
    """Queue total tasks one transaction each, a random gap apart; their latencies."""
    rng = random.Random(20261205)
    for _ in range(total):
        with db.session_scope() as session:
            tasks.insert_task(session, "create_user", {"name": "bench", "age": 1, "delay": 0.0})
        time.sleep(rng.uniform(*GAP))

    def finished():
        with db.session_scope() as session:
            return session.scalar(select(func.count()).where(Task.status == SUCCEEDED)) >= total
    wait_until(finished, f"{total} tasks to finish")
    with db.session_scope() as session:
        rows = session.execute(select(Task.created_at, Task.started_at)).all()
    latencies = sorted((started - created).total_seconds() * 1000 for created, started in rows)
    return {"p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
            "tasks": len(latencies)}


def report_rows(r):
    """The table's rows for the wake-up part."""
    rows = []
    for mode in ("with", "without"):
        if mode in r:
            name = "LISTEN/NOTIFY" if mode == "with" else "polling (0.5 s)"
            rows.append((f"submit->start, other process, {name}", f"{r[mode]['p50_ms']} / {r[mode]['p99_ms']}",
                         "p50 / p99 ms", f"{r[mode]['tasks']} tasks"))
    return rows
