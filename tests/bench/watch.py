"""make bench, part dashboard: what five browsers watching the task list cost a drain.

The same queue of create_user tasks drains with nobody watching and with five
headless Chromium pages open on /dashboard/tasks (each re-rendering its list
every second), alternating, best of each. Chromium shares the machine's two
cores with the server, so the server's own CPU time per task is reported too.
"""
import os

from sqlalchemy import func, select

import db
from db.models import Task
from tests.browser import ARGS, CHROMIUM

WATCHERS = 5


def cpu_seconds(pids):
    """User and system CPU seconds used so far by these processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def drain_once(server, pids, total, queue_directly, wait_drained, reset):
    """Drain total queued tasks; return (tasks/s from first claim to last finish, server CPU s per 1,000)."""
    reset()
    queue_directly(total)
    before = cpu_seconds(pids)
    wait_drained(total, interval=0.2)
    used = cpu_seconds(pids) - before
    with db.session_scope() as session:
        first, last = session.execute(
            select(func.min(Task.started_at), func.max(Task.finished_at))).one()
    return total / (last - first).total_seconds(), used * 1000 / total


def bench_dashboard(server, pids, total, queue_directly, wait_drained, reset, rounds=3):
    """6. drain with and without five browsers on the task list."""
    if not os.path.exists(CHROMIUM):
        return {"skipped": f"{CHROMIUM} not found (apt-get install chromium)"}
    from playwright.sync_api import sync_playwright

    plain, watched = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for _ in range(rounds):
                plain.append(drain_once(server, pids, total, queue_directly, wait_drained, reset))
                pages = [browser.new_page() for _ in range(WATCHERS)]
                for page in pages:
                    page.goto(server.base + "/dashboard/tasks")
                watched.append(drain_once(server, pids, total, queue_directly, wait_drained, reset))
                for page in pages:
                    page.close()
        finally:
            browser.close()
    best_plain, best_watched = max(plain), max(watched)
    return {"tasks": total, "watchers": WATCHERS, "rounds": rounds,
            "plain_tasks_per_s": round(best_plain[0], 1),
            "watched_tasks_per_s": round(best_watched[0], 1),
            "ratio": round(best_watched[0] / best_plain[0], 2),
            "plain_cpu_s_per_1000": round(min(cpu for _, cpu in plain), 2),
            "watched_cpu_s_per_1000": round(min(cpu for _, cpu in watched), 2),
            "plain_runs": [round(rate) for rate, _ in plain],
            "watched_runs": [round(rate) for rate, _ in watched]}


def report_rows(d):
    """The part's rows for run.report."""
    if "skipped" in d:
        return [("dashboard watching a drain", "skipped", "", d["skipped"])]
    return [
        (f"drain, {d['watchers']} browsers watching (t/s)", d["watched_tasks_per_s"],
         f"alone {d['plain_tasks_per_s']} t/s", f"x{d['ratio']}, best of {d['rounds']} each"),
        ("  server CPU s per 1,000 tasks", d["watched_cpu_s_per_1000"],
         f"alone {d['plain_cpu_s_per_1000']}", f"runs: watched {d['watched_runs']} alone {d['plain_runs']}"),
    ]
