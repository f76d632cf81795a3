"""make bench EXECUTOR=celery: 5,000 create_user tasks through the Celery executor,
through plain Celery (tests.bench.plain_celery), and the ORM-thread floor, on one database.

Each side's worker (-P threads -c 4) is started and ready before its tasks are
published; the clock runs from the first publish to the last row. The rounds
alternate, and each side keeps its best.
"""
import subprocess
import sys
import time

import redis
from sqlalchemy import func, select

import db
from db.models import Task, User
from service.runner import RunnerConfig, submit
from service.runner import celery as celery_executor
import service.jobs  # noqa: F401  create_user
from tests.bench import plain_celery
from tests.server import CeleryWorker, Process

BROKER = "redis://127.0.0.1:6379/12"
CONCURRENCY = 4


def count(model, *where):
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def wait_rows(model, total, *where, timeout=600):
    deadline = time.perf_counter() + timeout
    while count(model, *where) < total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {count(model, *where)} of {total} {model.__tablename__} rows")
        time.sleep(0.02)
    return time.perf_counter()


def plain_round(url, total, log_dir, reset):
    """Plain Celery: publish total tasks to a ready worker; tasks/s until every user exists."""
    reset()
    redis.Redis.from_url(plain_celery.app.conf.broker_url).flushdb()
    worker = Process([sys.executable, "-m", "celery", "-A", "tests.bench.plain_celery", "worker",
                      "-Q", "plain", "-P", "threads", "-c", str(CONCURRENCY), "-n", "plain@%h",
                      "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                     url, log_dir / "plain-celery.log").start()
    try:
        wait_ready(plain_celery.app)
        started = time.perf_counter()
        for n in range(total):
            plain_celery.create_user.apply_async(args=[f"p{n}", 1])
        done = wait_rows(User, total)
        return total / (done - started)
    finally:
        worker.stop()


def ours_round(url, total, log_dir, reset):
    """The Celery executor: submit (rows, then ids after commit) to a ready worker; tasks/s until all succeeded."""
    reset()
    redis.Redis.from_url(BROKER).flushdb()
    worker = CeleryWorker(url, log_dir / "ours-celery.log", BROKER, name="ours",
                          concurrency=CONCURRENCY, LOG_LEVEL="WARNING", TASK_MODULES="").start()
    executor = celery_executor.CeleryExecutor(RunnerConfig(executor="celery", broker_url=BROKER))
    executor.start()
    try:
        started = time.perf_counter()
        for first in range(0, total, 100):  # 100 tasks a transaction, as a batch submit would
            with db.session_scope() as session:
                for n in range(first, min(total, first + 100)):
                    submit.enqueue(session, "create_user", {"name": f"o{n}", "age": 1})
        done = wait_rows(Task, total, Task.status == "succeeded")
        return total / (done - started)
    finally:
        executor.stop()
        worker.stop()


def wait_ready(app, timeout=30):
    """Until a worker answers a ping on app's broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("no worker answered")


def bench_celery(url, total, floor, reset, log_dir, rounds=3):
    """Race plain Celery and the Celery executor; each keeps its best of rounds."""
    submit.configure(100_000)
    plain, ours = [], []
    for _ in range(rounds):
        plain.append(plain_round(url, total, log_dir, reset))
        ours.append(ours_round(url, total, log_dir, reset))
    best_plain, best_ours = max(plain), max(ours)
    return {"tasks": total, "rounds": rounds, "floor_rows_per_s": round(floor, 1),
            "plain_tasks_per_s": round(best_plain, 1), "ours_tasks_per_s": round(best_ours, 1),
            "ratio": round(best_ours / best_plain, 2), "ours_vs_floor": round(best_ours / floor, 2),
            "plain_runs": [round(x) for x in plain], "ours_runs": [round(x) for x in ours]}


def report_rows(r):
    return [
        ("celery executor drain (t/s)", r["ours_tasks_per_s"], f"plain Celery {r['plain_tasks_per_s']}",
         f"x{r['ratio']} (target >= 2), best of {r['rounds']}"),
        ("  vs ORM-thread floor", r["ours_vs_floor"], f"floor {r['floor_rows_per_s']} rows/s",
         f"runs: ours {r['ours_runs']} plain {r['plain_runs']}"),
    ]
