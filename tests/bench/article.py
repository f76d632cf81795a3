"""Bench part "article": the article's own route against the article's own app.

Each run starts a fresh server on a fresh database and measures from the first
request after it answers (ours: /healthz; the article's app: any answer), as a
user who starts it and uses it at once would: 1,000 GETs of /user/thread_pool
at concurrency 20, then until every row is written. Ours is the service with its
default settings (a durable task per request); theirs is tests.bench.article_app
(Flask's development server, ThreadPoolExecutor(3), nothing tracked). The two
alternate, three runs each, and each of our runs is paired with the article
app's run next to it.
"""
import statistics
import sys
import time
import urllib.error
import urllib.request

from sqlalchemy import create_engine, func, select

from db.models import User
from tests.bench.client import load, percentile
from tests.server import Process, Server, free_port

TOTAL = 1000
CONCURRENCY = 20
ROUTE = "/user/thread_pool"
ORDER = ("ours", "article", "article", "ours", "ours", "article")
PAIRS = ((0, 0), (1, 1), (2, 2))  # (our run, the article app's run beside it)


class ArticleApp(Process):
    """python -m tests.bench.article_app on a free port."""

    def __init__(self, db_url, log_path):
        self.port = free_port()
        super().__init__([sys.executable, "-m", "tests.bench.article_app", str(self.port), db_url],
                         db_url, log_path)

    def start(self, timeout=30):
        """Start and wait until it answers at all (a 404 is an answer)."""
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"article app exited:\n{self.output()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2)
            except urllib.error.HTTPError:  # its 404: it answers
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"article app not answering in {timeout}s:\n{self.output()}")


def start_side(side, url, log_path):
    """A fresh server of one side, answering."""
    if side == "article":
        return ArticleApp(url, log_path).start()
    return Server(url, log_path, machine_defaults=True, SEED_TASK_DELAY=0,
                  LOG_LEVEL="WARNING").start(ready="/healthz")


def count_users(engine):
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(User)).scalar()


def one_run(url, side, log_path, total=TOTAL, timeout=300):
    """Serve a fresh server of side, load the route, wait for every row; return the run's figures."""
    server = start_side(side, url, log_path)
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        latencies, elapsed, statuses = load(server.port, "GET", ROUTE, None, total, CONCURRENCY)
        deadline = time.perf_counter() + timeout
        while count_users(engine) < total:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{side}: only {count_users(engine)} of {total} rows written")
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
    """Alternate fresh runs of both sides; each pair's ratios, and the means'."""
    runs = {"ours": [], "article": []}
    for n, side in enumerate(ORDER):
        runs[side].append(one_run(fresh_database(), side, log_dir / f"article-{n}-{side}.log", total))
    mean = {side: {key: round(statistics.mean(run[key] for run in runs[side]), 1)
                   for key in ("p50_ms", "p99_ms", "tasks_per_s")} for side in runs}
    pairs = [{"throughput": round(runs["ours"][o]["tasks_per_s"] / runs["article"][a]["tasks_per_s"], 2),
              "p99": round(runs["ours"][o]["p99_ms"] / runs["article"][a]["p99_ms"], 2)} for o, a in PAIRS]
    return {"runs": runs, "mean": mean, "pairs": pairs,
            "throughput_ratio": round(mean["ours"]["tasks_per_s"] / mean["article"]["tasks_per_s"], 2),
            "p99_ratio": round(mean["ours"]["p99_ms"] / mean["article"]["p99_ms"], 2),
            "worst_throughput_ratio": min(pair["throughput"] for pair in pairs),
            "worst_p99_ratio": max(pair["p99"] for pair in pairs)}


def report_rows(result):
    """The part's lines in make bench's table."""
    ours, theirs = result["mean"]["ours"], result["mean"]["article"]
    return [
        ("article route: tasks/s (all rows)", ours["tasks_per_s"], f"article app {theirs['tasks_per_s']}",
         f"x{result['throughput_ratio']} (target >= 1.0 in each pair; worst pair x{result['worst_throughput_ratio']})"),
        ("article route: p50 / p99 (ms)", f"{ours['p50_ms']} / {ours['p99_ms']}",
         f"article app {theirs['p50_ms']} / {theirs['p99_ms']}",
         f"p99 x{result['p99_ratio']} (target <= 1.5 in each pair; worst pair x{result['worst_p99_ratio']})"),
        ("  pairs: tasks/s ratio, p99 ratio", " ".join(f"x{p['throughput']},x{p['p99']}" for p in result["pairs"]),
         "", "each side a fresh server, from its first request"),
        ("  runs: ours tasks/s, p99", " ".join(f"{r['tasks_per_s']},{r['p99_ms']}" for r in result["runs"]["ours"]),
         " ".join(f"{r['tasks_per_s']},{r['p99_ms']}" for r in result["runs"]["article"]), "article app's runs"),
    ]
