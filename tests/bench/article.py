"""Bench part "article": the article's own route against the seed pattern it replaces.

Each run starts a fresh server with the default settings (only DATABASE_URL,
BENCH_MODE and SEED_TASK_DELAY=0 set) on a fresh database and measures from its
first request: 1,000 GETs at concurrency 20, then until every row is written.
Ours is /user/thread_pool (a durable task per request); the seed pattern is
/bench/seed_pattern (the insert handed to ThreadPoolExecutor(3), untracked).
The two alternate, in both orders. For the record the seed pattern also runs on
the layout that suits it best, every process serving requests (its pool lives
in the process that took the request, so a task process idles beside it).
"""
import statistics
import time

from sqlalchemy import create_engine, func, select

from db.models import User
from tests.bench.client import load, percentile
from tests.server import Server

TOTAL = 1000
CONCURRENCY = 20
ROUTES = {"ours": "/user/thread_pool", "seed": "/bench/seed_pattern",
          "seed_all_web": "/bench/seed_pattern"}
ORDER = ("ours", "seed", "seed_all_web", "seed_all_web", "seed", "ours")


def layout(side):
    """Extra settings of a side: none (the defaults), or every process a web process."""
    if side != "seed_all_web":
        return {}
    from service.config import available_cpus, default_layout

    web, _, task_processes, _ = default_layout(available_cpus())
    return {"WEB_WORKERS": web + task_processes, "TASK_PROCESSES": 0}


def count_users(engine):
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(User)).scalar()


def one_run(url, route, log_path, total=TOTAL, timeout=300, **settings):
    """Serve a fresh server, load route, wait for every row; return the run's figures."""
    server = Server(url, log_path, machine_defaults=True, BENCH_MODE="true", SEED_TASK_DELAY=0,
                    LOG_LEVEL="WARNING", **settings).start()
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        latencies, elapsed, statuses = load(server.port, "GET", route, None, total, CONCURRENCY)
        deadline = time.perf_counter() + timeout
        while count_users(engine) < total:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{route}: only {count_users(engine)} of {total} rows written")
            time.sleep(0.01)
        written = time.perf_counter() - started
    finally:
        engine.dispose()
        server.stop()
    return {"p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "req_per_s": round(total / elapsed, 1), "all_rows_s": round(written, 2),
            "tasks_per_s": round(total / written, 1), "statuses": statuses}


def bench_article(fresh_database, log_dir, total=TOTAL):
    """Alternate fresh runs of both routes; their means and our ratios to the seed pattern."""
    runs = {side: [] for side in ROUTES}
    for n, side in enumerate(ORDER):
        url = fresh_database()
        runs[side].append(one_run(url, ROUTES[side], log_dir / f"article-{n}-{side}.log", total,
                                  **layout(side)))
    mean = {side: {key: round(statistics.mean(run[key] for run in runs[side]), 1)
                   for key in ("p50_ms", "p99_ms", "tasks_per_s")} for side in runs}
    return {"runs": runs, "mean": mean,
            "throughput_ratio": round(mean["ours"]["tasks_per_s"] / mean["seed"]["tasks_per_s"], 2),
            "p99_ratio": round(mean["ours"]["p99_ms"] / mean["seed"]["p99_ms"], 2),
            "worst_throughput_ratio": round(min(r["tasks_per_s"] for r in runs["ours"])
                                            / max(r["tasks_per_s"] for r in runs["seed"]), 2),
            "worst_p99_ratio": round(max(r["p99_ms"] for r in runs["ours"])
                                     / min(r["p99_ms"] for r in runs["seed"]), 2)}


def report_rows(result):
    """The part's lines in make bench's table."""
    ours, seed, best = (result["mean"][side] for side in ("ours", "seed", "seed_all_web"))
    return [
        ("article route: tasks/s (all rows)", ours["tasks_per_s"], f"seed pattern {seed['tasks_per_s']}",
         f"x{result['throughput_ratio']} (target >= 0.9; worst pair x{result['worst_throughput_ratio']})"),
        ("article route: p50 / p99 (ms)", f"{ours['p50_ms']} / {ours['p99_ms']}",
         f"seed pattern {seed['p50_ms']} / {seed['p99_ms']}",
         f"p99 x{result['p99_ratio']} (target <= 1.5; worst pair x{result['worst_p99_ratio']})"),
        ("  seed pattern, every process web", f"{best['tasks_per_s']} tasks/s",
         f"p50 / p99 {best['p50_ms']} / {best['p99_ms']}",
         f"ours x{round(ours['tasks_per_s'] / best['tasks_per_s'], 2)}, p99 x{round(ours['p99_ms'] / best['p99_ms'], 2)}"),
        ("  runs: ours tasks/s, p99", " ".join(f"{r['tasks_per_s']},{r['p99_ms']}" for r in result["runs"]["ours"]),
         " ".join(f"{r['tasks_per_s']},{r['p99_ms']}" for r in result["runs"]["seed"] + result["runs"]["seed_all_web"]),
         "each a fresh server, from its first request"),
    ]
