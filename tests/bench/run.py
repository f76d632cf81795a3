"""make bench: the service under load against floors measured in the same run.

python -m tests.bench.run --db sqlite|mysql|postgres [--quick] [--only PART ...] [--executor celery]
Prints one table and writes it as JSON to var/bench/<database>.json (a run
with --only replaces its own parts there and keeps the others).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import psycopg
import pymysql
from sqlalchemy import func, insert, select

import db
from db import users
from db.models import SUCCEEDED, UNFINISHED_STATES, Task, utcnow
from db.reset import reset_database_and_commit
from tests.bench import article, celery_race, flow, wakeup, watch, workflow
from tests.bench.big import bench_big, report_rows
from tests.bench.client import load, spread, summarize
from tests.bench.monitor import Monitor
from tests.server import ROOT, Server, migrate

MYSQL_SERVER = "mysql+pymysql://root:@127.0.0.1:3306"
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
MYSQL_DB = "tasks_bench"  # the server databases' names (MariaDB and PostgreSQL alike)
MYSQL_BIG_DB = "tasks_bench_big"
MYSQL_ARTICLE_DB = "tasks_bench_article"
WORKERS = 4


def database_url(kind, sqlite_file="bench.db", mysql_db=MYSQL_DB):
    """A fresh, migrated benchmark database."""
    if kind == "sqlite":
        path = os.path.join(ROOT, "var", "bench", sqlite_file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        url = f"sqlite:///{path}"
    elif kind == "postgres":
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {mysql_db} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {mysql_db}")
        url = f"{POSTGRES_SERVER}/{mysql_db}"
    else:
        connection = pymysql.connect(host="127.0.0.1", user="root", password="")
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {mysql_db}")
            cursor.execute(f"CREATE DATABASE {mysql_db} CHARACTER SET utf8mb4")
        connection.close()
        url = f"{MYSQL_SERVER}/{mysql_db}"
    migrate(url)
    return url


def count_by_status():
    with db.session_scope() as session:
        return dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())


def wait_drained(expected, timeout=600, interval=0.02):
    """Wait until expected tasks succeeded; return when that happened (perf_counter).

    Fails at once if any task ended otherwise: a benchmark of lost work is no benchmark.
    """
    deadline = time.perf_counter() + timeout
    while True:
        by_status = count_by_status()
        if by_status.get(SUCCEEDED, 0) >= expected:
            return time.perf_counter()
        ended = sum(by_status.values()) >= expected and not any(
            by_status.get(status) for status in UNFINISHED_STATES)
        if ended or time.perf_counter() > deadline:
            raise RuntimeError(f"expected {expected} succeeded tasks, found {by_status}")
        time.sleep(interval)


def reset():
    with db.session_scope() as session:
        reset_database_and_commit(session)


def create_user_body(delay=0.0):
    return {"name": "create_user", "args": {"name": "bench", "age": 1, "delay": delay}}


def queue_directly(total, name="create_user", args=None):
    """Insert total queued tasks in one transaction, bypassing the API."""
    now = utcnow()
    args = {"name": "bench", "age": 1, "delay": 0.0} if args is None else args
    rows = [dict(name=name, args=args, status="queued", run_after=now, created_at=now,
                 max_attempts=3, attempts=0, progress=0, cancel_requested=False)
            for _ in range(total)]
    with db.session_scope() as session:
        session.execute(insert(Task), rows)


def bench_enqueue(server, monitor_pids, url, total, concurrency=32):
    """1. enqueue latency next to the floor endpoint; also drain and peaks.

    Submitting tasks sets the runner draining them, which competes for the CPU
    and the database. So the floor is measured twice: with the runner idle, and
    while it drains as many tasks as the enqueue run submits (the same
    background work); the target ratio is taken against the latter.
    """
    load(server.port, "POST", "/bench/floor", {}, 100, concurrency)  # warm up
    floor_idle = summarize(*load(server.port, "POST", "/bench/floor", {}, total, concurrency)[:2])
    reset()
    queue_directly(total)
    floor_busy = summarize(*load(server.port, "POST", "/bench/floor", {}, total, concurrency)[:2])
    wait_drained(total)
    reset()
    monitor = Monitor(monitor_pids, url)
    with monitor:
        started = time.perf_counter()
        latencies, elapsed, statuses = load(server.port, "POST", "/api/tasks",
                                            create_user_body(), total, concurrency)
        drained = wait_drained(total)
    monitor.close()
    enqueue = summarize(latencies, elapsed)
    return {
        "floor_idle": floor_idle,
        "floor": floor_busy,
        "enqueue": enqueue,
        "statuses": statuses,
        "all_succeeded": count_by_status() == {SUCCEEDED: total},
        "drain_s": round(drained - started, 2),
        "peak_threads": monitor.peak("threads"),
        "peak_db_connections": monitor.peak("db_connections"),
        "ratio_p99": round(enqueue["p99_ms"] / floor_busy["p99_ms"], 2),
        "ratio_p99_vs_idle_floor": round(enqueue["p99_ms"] / floor_idle["p99_ms"], 2),
    }


def orm_floor(total, threads=WORKERS):
    """The same rows inserted through the ORM by plain threads, one transaction each."""
    def insert_one():
        try:
            users.create_user(db.Session, name="bench", age=1)
            db.Session.commit()
        finally:
            db.Session.remove()

    return total / spread(total, threads, insert_one)


def bench_drain(total, rounds=5):
    """2. drain throughput of queued tasks next to the ORM-thread floor.

    Floor and drain alternate for a few rounds and each keeps its best: on a
    shared machine a noisy moment only ever slows a run down.
    """
    floors, rates = [], []
    for _ in range(rounds):
        reset()
        floors.append(orm_floor(total))
        reset()
        queue_directly(total)
        wait_drained(total, interval=0.2)  # timed from the rows, so poll gently
        with db.session_scope() as session:
            first, last = session.execute(
                select(func.min(Task.started_at), func.max(Task.finished_at))).one()
        # From the first claim to the last finish: the pickup delay of rows queued by
        # another process (up to TASK_POLL_INTERVAL) is not throughput.
        rates.append(total / (last - first).total_seconds())
    floor, rate = max(floors), max(rates)
    return {"floor_rows_per_s": round(floor, 1), "tasks_per_s": round(rate, 1),
            "ratio": round(rate / floor, 2), "rounds": rounds,
            "floor_runs": [round(x) for x in floors], "drain_runs": [round(x) for x in rates]}


def bench_bounded(server, pids, url, total, concurrency=32):
    """3. threads, RSS and connections before, at peak and after a large burst."""
    reset()
    monitor = Monitor(pids, url)
    with monitor:
        latencies, elapsed, statuses = load(server.port, "POST", "/api/tasks",
                                            create_user_body(0.05), total, concurrency)
        wait_drained(total)
        time.sleep(1.0)  # let idle request threads and connections settle
        after = monitor.sample()
    monitor.close()
    ready = server.request("GET", "/readyz")[2]
    return {
        "statuses": statuses,
        "threads": [monitor.before["threads"], monitor.peak("threads"), after["threads"]],
        "rss_mb": [round(monitor.before["rss_mb"], 1), round(monitor.peak("rss_mb"), 1),
                   round(after["rss_mb"], 1)],
        "rss_growth_mb": round(after["rss_mb"] - monitor.before["rss_mb"], 1),
        "peak_db_connections": monitor.peak("db_connections"),
        "pool_checked_out_after": ready["pool"]["checked_out"],
    }


def bench_overhead(server, total):
    """4. created_at -> finished_at of no-op tasks submitted one at a time."""
    reset()
    load(server.port, "POST", "/api/tasks", {"name": "bench_noop"}, total, 1)
    wait_drained(total)
    with db.session_scope() as session:
        rows = session.execute(select(Task.created_at, Task.started_at, Task.finished_at)).all()
    total_ms = [(f - c).total_seconds() * 1000 for c, s, f in rows]
    wait_ms = [(s - c).total_seconds() * 1000 for c, s, f in rows]
    return {"median_ms": round(statistics.median(total_ms), 2),
            "median_queue_wait_ms": round(statistics.median(wait_ms), 2),
            "p99_ms": round(sorted(total_ms)[int(len(total_ms) * 0.99) - 1], 2)}


SERVED = ("enqueue", "drain", "bounded", "overhead", "dashboard", "workflow")  # one database and server for these
PARTS = SERVED + ("wakeup", "flow", "big", "article")  # these run their own processes


def run_served(kind, parts, scale):
    """Run the parts that share the benchmark database and one server."""
    url = database_url(kind)
    db.init_engine(url, pool_size=WORKERS + 2)
    log_path = os.path.join(ROOT, "var", "bench", f"{kind}-server.log")
    server = Server(url, log_path, BENCH_MODE="true", TASK_WORKERS=WORKERS,
                    LOG_LEVEL="WARNING").start()
    try:
        pids = server.pids()[1:]  # the worker process(es), where requests and tasks run
        runs = {
            "enqueue": lambda: bench_enqueue(server, pids, url, 2000 // scale),
            "drain": lambda: bench_drain(5000 // scale),
            "bounded": lambda: bench_bounded(server, pids, url, 10000 // scale),
            "overhead": lambda: bench_overhead(server, 2000 // scale),
            "dashboard": lambda: watch.bench_dashboard(server, pids, 5000 // scale, queue_directly,
                                                       wait_drained, reset),
            "workflow": lambda: workflow.bench_workflow(server, url, pathlib.Path(ROOT, "var", "bench"), reset,
                                                        queue_directly, wait_drained, 1000 // scale),
        }
        return {part: runs[part]() for part in SERVED if part in parts}
    finally:
        server.stop()
        db.dispose_engine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "mysql", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="a tenth of the load, for a smoke run")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); the JSON keeps the other parts' last results")
    parser.add_argument("--executor", choices=("threads", "celery"), default="threads",
                        help="celery: race the Celery executor against plain Celery instead")
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    parts = options.only or PARTS
    results = {"database": options.db}
    if options.executor == "celery":
        results["celery"] = run_celery_race(options.db, 5000 // scale)
        report(results)
        write_results(results, keep_others=True)
        return
    if any(part in SERVED for part in parts):
        results.update(run_served(options.db, parts, scale))
    if "wakeup" in parts:
        results["wakeup"] = run_wakeup(options.db, 200 // scale)
    if "flow" in parts:
        results["flow"] = run_flow(options.db, 3000 // scale)
    if "big" in parts:
        url = database_url(options.db, "big.db", MYSQL_BIG_DB)
        results["big"] = bench_big(url, options.db, scale)
    if "article" in parts:
        results["article"] = article.bench_article(
            lambda: database_url(options.db, "article.db", MYSQL_ARTICLE_DB),
            pathlib.Path(ROOT, "var", "bench"), article.TOTAL // scale)
    report(results)
    write_results(results, keep_others=bool(options.only))


def run_wakeup(kind, total):
    """Submit -> start from this process to a worker process, on a fresh database."""
    url = database_url(kind)
    db.init_engine(url, pool_size=2)
    try:
        return wakeup.bench_wakeup(url, kind, total, pathlib.Path(ROOT, "var", "bench"), reset)
    finally:
        db.dispose_engine()


def run_flow(kind, total):
    """Plain drain beside rate limits, on a fresh database."""
    url = database_url(kind)
    db.init_engine(url, pool_size=2)
    try:
        return flow.bench_flow(url, kind, total, pathlib.Path(ROOT, "var", "bench"), reset)
    finally:
        db.dispose_engine()


def run_celery_race(kind, total):
    """The Celery executor against plain Celery and the ORM-thread floor, on one fresh database."""
    url = database_url(kind)
    db.init_engine(url, pool_size=WORKERS + 2)
    try:
        reset()
        floor = max(orm_floor(total) for _ in range(3))
        log_dir = pathlib.Path(ROOT, "var", "bench")
        return celery_race.bench_celery(url, total, floor, reset, log_dir)
    finally:
        db.dispose_engine()


def write_results(results, keep_others):
    """Write var/bench/<database>.json; with keep_others, the parts not run keep their last results."""
    path = os.path.join(ROOT, "var", "bench", f"{results['database']}.json")
    if keep_others and os.path.exists(path):
        with open(path) as previous:
            results = {**json.load(previous), **results}
    with open(path, "w") as out:
        json.dump(results, out, indent=2)
    print(f"\nwritten to {os.path.relpath(path, ROOT)}")


def report(r):
    rows = []
    if "enqueue" in r:
        e = r["enqueue"]
        rows += [
            ("enqueue p50 / p99 (ms)", f"{e['enqueue']['p50_ms']} / {e['enqueue']['p99_ms']}",
             f"floor {e['floor']['p50_ms']} / {e['floor']['p99_ms']}", f"p99 x{e['ratio_p99']} (target <= 1.5)"),
            ("  (floor with the runner idle)", "", f"{e['floor_idle']['p50_ms']} / {e['floor_idle']['p99_ms']}",
             f"p99 x{e['ratio_p99_vs_idle_floor']}"),
            ("enqueue req/s", e["enqueue"]["req_per_s"], f"floor {e['floor']['req_per_s']}",
             f"all succeeded: {e['all_succeeded']}, drain {e['drain_s']} s"),
        ]
    if "drain" in r:
        d = r["drain"]
        rows.append(("drain tasks/s", d["tasks_per_s"], f"floor {d['floor_rows_per_s']} rows/s",
                     f"x{d['ratio']} (target >= 0.5), best of {d['rounds']}"))
        rows.append(("  rounds: drain / floor", " ".join(map(str, d["drain_runs"])),
                     " ".join(map(str, d["floor_runs"])), ""))
    if "bounded" in r:
        b = r["bounded"]
        rows += [
            ("threads before/peak/after", "/".join(map(str, b["threads"])), "", "flat = workers + request threads + const"),
            ("RSS MB before/peak/after", "/".join(map(str, b["rss_mb"])), "",
             f"growth {b['rss_growth_mb']} MB (target < 20)"),
            ("DB connections at peak", b["peak_db_connections"], "",
             f"pool checked-out after: {b['pool_checked_out_after']} (target 0)"),
        ]
    if "overhead" in r:
        o = r["overhead"]
        rows.append(("no-op task created->finished (ms)", o["median_ms"], f"p99 {o['p99_ms']}",
                     f"queue wait median {o['median_queue_wait_ms']} ms"))
    if "celery" in r:
        rows += celery_race.report_rows(r["celery"])
    if "dashboard" in r:
        rows += watch.report_rows(r["dashboard"])
    if "wakeup" in r:
        rows += wakeup.report_rows(r["wakeup"])
    if "workflow" in r:
        rows += workflow.report_rows(r["workflow"])
    if "flow" in r:
        rows += flow.report_rows(r["flow"])
    if "big" in r:
        rows += report_rows(r["big"])
    if "article" in r:
        rows += article.report_rows(r["article"])
    print(f"\n{r['database']}")
    for name, value, floor, note in rows:
        print(f"  {name:36} {str(value):>16}  {str(floor):>24}  {note}")


if __name__ == "__main__":
    sys.exit(main())
