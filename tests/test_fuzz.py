"""Fuzz the live OpenAPI document of a real server: no 5xx, every response as documented.

schemathesis reads /openapi.json from the running server, so a route added
later is fuzzed without touching this file. FUZZ_SEED fixes the seed (CI sets
it); unset, each run draws its own and reports it. FUZZ_SECONDS bounds the run.
"""
import json
import os
import random
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, select

from db.models import Task, User, Workflow, WorkflowNode
from service.runner import InvalidArguments, registry
from tests.conftest import ROOT, backend
from tests.server import Server, migrate

pytestmark = pytest.mark.slow

FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS") or 60)
CONFIG = ROOT / "tests" / "fuzz.toml"


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    return empty_db


def run_schemathesis(base_url, seed, report_dir):
    """Every phase and every check but the authentication one; return the JSON report and HAR."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{base_url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", "all", "--exclude-checks", "ignored_auth",
        "--max-time", str(FUZZ_SECONDS), "--seed", str(seed),
        "--generation-database", "none", "--no-color",
        "--report", "json,har", "--report-dir", str(report_dir),
    ]
    finished = subprocess.run(command, cwd=report_dir, capture_output=True, text=True,
                              timeout=FUZZ_SECONDS * 4 + 120)
    reports = {path.name.split("-")[0]: json.loads(path.read_text())
               for path in report_dir.glob("*.json")}
    assert "json" in reports, finished.stdout[-5000:] + finished.stderr[-5000:]
    return reports["json"], reports["har"]["log"]["entries"], finished.stdout


def exchanges(entries):
    """(method, path, status, headers, body) of every request the fuzzer sent."""
    for entry in entries:
        request, response = entry["request"], entry["response"]
        path = "/" + request["url"].split("/", 3)[3].split("?")[0]
        headers = {h["name"].lower(): h["value"] for h in response["headers"]}
        text = response.get("content", {}).get("text") or ""
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        yield request["method"], path, response["status"], headers, body


def expected_rows(entries):
    """The task, user and workflow ids the accepted requests say they created, and how many
    bulk retries made (a workflow's later steps are its own: they start as the earlier ones end)."""
    task_ids, user_ids, workflow_ids, bulk_retries = set(), set(), set(), 0
    for method, path, status, headers, body in exchanges(entries):
        if method == "POST" and status == 202 and path.startswith("/api/workflows"):
            workflow_ids.add(body["id"])
        elif method == "POST" and status == 202 and (path == "/api/tasks" or path.endswith("/retry")):
            task_ids.add(body["id"])
        elif (method, path, status) == ("POST", "/api/tasks/retry", 200):
            bulk_retries += body["affected"]
        elif (method, path, status) == ("POST", "/api/users", 201):
            user_ids.add(body["id"])
        elif (method, path, status) == ("GET", "/user/add", 200):
            user_ids.add(body)
        elif method == "GET" and path in ("/user/thread", "/user/thread_pool") and status == 200:
            task_ids.add(int(headers["location"].rsplit("/", 1)[1]))
    return task_ids, user_ids, workflow_ids, bulk_retries


def write_summary(db_url, seed, report, entries, output):
    """Keep what the run did in var/fuzz/<database>.json and .log (the CI log prints it)."""
    summary = {"database": backend(db_url), "seed": seed, "seconds": FUZZ_SECONDS,
               "generated": report["test_cases"]["generated"], "requests": len(entries),
               "failures": sum(f["count"] for f in report["failures"]),
               "errors": len(report["errors"]),
               "phases": {name: phase["status"] for name, phase in report["phases"].items()}}
    out = ROOT / "var" / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{summary['database']}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{summary['database']}.log").write_text(output)
    print(json.dumps(summary))
    return summary


def test_fuzzing_the_live_document_finds_no_failure_and_leaves_only_accepted_rows(
        migrated_db, tmp_path, record_property):
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(2**31))
    record_property("fuzz_seed", seed)
    # /user/add works no seconds here, with a slot per thread but one, so the
    # fuzzer's own concurrency never meets its 503 (tested on its own elsewhere).
    server = Server(migrated_db, tmp_path / "server.log", SEED_SYNC_DELAY=0, SEED_SYNC_SLOTS=7,
                    TASK_SHUTDOWN_GRACE=2, TASK_POLL_INTERVAL=0.1, LOG_LEVEL="WARNING").start()
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    try:
        report, entries, output = run_schemathesis(server.base, seed, report_dir)
    finally:
        server.stop()
    summary = write_summary(migrated_db, seed, report, entries, output)
    assert server.proc.returncode == 0, server.output()[-5000:]
    assert not report["failures"] and not report["errors"], (
        f"seed {seed}: {summary}\n{output[-20000:]}")
    assert set(summary["phases"].values()) <= {"success", "skip"}, summary
    assert summary["generated"] > 1000, summary

    task_ids, user_ids, workflow_ids, bulk_retries = expected_rows(entries)
    engine = create_engine(migrated_db)
    with engine.connect() as connection:
        stored_tasks = connection.execute(select(Task.id, Task.name, Task.args, Task.status,
                                                 Task.result, Task.retry_of, WorkflowNode.workflow_id)
                                          .outerjoin(WorkflowNode, WorkflowNode.id == Task.workflow_node)).all()
        stored_users = set(connection.scalars(select(User.id)))
        stored_workflows = set(connection.scalars(select(Workflow.id)))
    engine.dispose()
    assert not [t for t in stored_tasks if t.status == "running"]
    # Every row came from a request the service accepted, and each one is there;
    # a bulk retry answers how many tasks it made, not their ids.
    stored_ids = {t.id for t in stored_tasks}
    assert task_ids <= stored_ids
    assert stored_workflows == workflow_ids
    assert {t.workflow_id for t in stored_tasks if t.workflow_id} <= workflow_ids
    unreported = [t for t in stored_tasks if t.id not in task_ids and t.workflow_id is None]
    assert len(unreported) == bulk_retries and all(t.retry_of for t in unreported)
    made_by_tasks = {t.result for t in stored_tasks
                     if t.name == "create_user" and t.status == "succeeded"}
    assert stored_users == user_ids | made_by_tasks
    for stored in stored_tasks:
        try:
            registry.get(stored.name).load_args(stored.args)
        except InvalidArguments as error:
            pytest.fail(f"task {stored.id} holds arguments its task refuses: {error}")
    assert task_ids and user_ids, "the fuzzer never had a request accepted"
    assert workflow_ids, "the fuzzer never had a workflow accepted"
