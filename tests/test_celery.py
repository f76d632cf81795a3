"""The Celery executor with real brokers and real Celery worker processes, on SQLite and MariaDB."""
import datetime as dt
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

import db
from db import queues
from db.models import DEFAULT_QUEUE, Task, User, utcnow
from service.runner import RunnerConfig, submit
from service.runner import celery as celery_executor
from service.runner.celery import CeleryExecutor
from tests.conftest import most_in_any_window, wait_finished, wait_for
from tests.server import CeleryWorker, Server, free_port, migrate

import tests.celery_tasks  # noqa: F401  the tasks the workers include, known here too

pytestmark = pytest.mark.slow

BROKERS = {"redis": "redis://127.0.0.1:6379/9", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}
FAST = dict(TASK_HEARTBEAT=0.3, TASK_LEASE=2, TASK_POLL_INTERVAL=0.1, CELERY_REPUBLISH_AFTER=3,
            LOG_LEVEL="INFO")


def empty_broker(url):
    """Drop what an earlier test left in the task queues."""
    celery_executor.configure(RunnerConfig(broker_url=url))
    with celery_executor.app.connection_for_write() as connection:
        for queue in (DEFAULT_QUEUE, "mail"):
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except Exception:  # the queue does not exist yet
                pass
            finally:
                channel.close()


@pytest.fixture
def migrated(empty_db):
    """A migrated database, the session registry bound to it."""
    migrate(empty_db)
    db.init_engine(empty_db)
    yield empty_db
    db.dispose_engine()


@pytest.fixture
def workers(tmp_path):
    """Start Celery workers; stop (or reap) them all at the end."""
    started = []

    def start(db_url, broker, name="w1", **options):
        worker = CeleryWorker(db_url, tmp_path / f"{name}.log", broker, name=name,
                              **{**FAST, **options}).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=30)


@pytest.fixture
def publisher():
    """This process publishes what it submits, as a web process with TASK_EXECUTOR=celery does."""
    made = []

    def make(broker):
        executor = CeleryExecutor(RunnerConfig(executor="celery", broker_url=broker))
        executor.start()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.stop()


def submit_users(count, prefix="u", chunk=100, delay=0.0):
    """Queue count create_user tasks (each working delay seconds), a transaction per chunk; their ids."""
    ids = []
    for start in range(0, count, chunk):
        with db.session_scope() as session:
            ids += [submit.enqueue(session, "create_user",
                                   {"name": f"{prefix}{n}", "age": 1, "delay": delay}).id
                    for n in range(start, min(count, start + chunk))]
    return ids


def counts():
    """({status: n} of the tasks, users, distinct user names)."""
    with db.session_scope() as session:
        by_status = dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        users, names = session.execute(select(func.count(), func.count(User.name.distinct()))).one()
    return by_status, users, names


def all_done(count):
    """Wait until count tasks succeeded; return the final counts."""
    return wait_for(lambda: counts()[0].get("succeeded") == count and counts(), timeout=120,
                    interval=0.1, message=f"{count} tasks to succeed")


def assert_each_ran_once(count):
    by_status, users, names = counts()
    assert by_status == {"succeeded": count}, by_status
    assert users == names == count, (users, names)  # a task run twice would insert its user twice


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_thousand_tasks_through_two_celery_workers_run_exactly_once(migrated, workers, publisher,
                                                                       broker):
    url = BROKERS[broker]
    empty_broker(url)
    for name in ("w1", "w2"):
        workers(migrated, url, name=name)
    publisher(url)
    submit_users(1000)
    all_done(1000)
    assert_each_ran_once(1000)
    with db.session_scope() as session:
        owners = set(session.scalars(select(Task.owner)))
        assert session.scalar(select(func.max(Task.attempts))) == 1
    assert len({owner.split(":")[1] for owner in owners}) == 2  # both worker processes ran tasks


def test_every_id_delivered_three_times_still_runs_once(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    publisher(url)
    ids = submit_users(300, prefix="x", delay=0.01)  # published once on commit
    for batch in (ids, list(reversed(ids))):  # and twice more, in other batches and orders
        celery_executor.publish([(task_id, DEFAULT_QUEUE) for task_id in batch])
    for name in ("w1", "w2"):
        workers(migrated, url, name=name)
    all_done(300)
    assert_each_ran_once(300)
    with db.session_scope() as session:
        assert session.scalar(select(func.max(Task.attempts))) == 1


def test_a_worker_killed_mid_drain_loses_and_doubles_nothing(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    doomed = workers(migrated, url, name="doomed")
    workers(migrated, url, name="steady")
    publisher(url)
    submit_users(1000, prefix="k", delay=0.02)  # so that each thread is inside a task when it dies
    wait_for(lambda: counts()[0].get("succeeded", 0) >= 250, timeout=60, message="a quarter done")
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    # Its claimed rows come back after the lease, its unclaimed messages after republish.
    workers(migrated, url, name="restarted")
    all_done(1000)
    assert_each_ran_once(1000)
    with db.session_scope() as session:
        taken_back = session.scalar(select(func.count()).where(Task.attempts == 2))
    assert taken_back >= 1  # tasks it was running when killed ran again, each to one user


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of our own, to stop and start again (it keeps nothing on disk)."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]
    server = {"proc": None, "url": f"redis://127.0.0.1:{port}/0"}

    def start():
        server["proc"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                        text=True).stdout.strip() == "PONG", message="redis")

    def stop():
        server["proc"].terminate()
        server["proc"].wait(10)

    server.update(start=start, stop=stop)
    yield server
    if server["proc"] and server["proc"].poll() is None:
        stop()


def test_a_broker_restarted_mid_drain_loses_nothing(migrated, workers, publisher, private_redis):
    private_redis["start"]()
    url = private_redis["url"]
    for name in ("w1", "w2"):
        workers(migrated, url, name=name)
    publisher(url)
    submit_users(1000, prefix="r")
    wait_for(lambda: counts()[0].get("succeeded", 0) >= 200, timeout=60, message="some done")
    private_redis["stop"]()  # every message in it is gone: it keeps nothing
    time.sleep(1)  # the broker stays down a moment while workers notice
    private_redis["start"]()
    all_done(1000)
    assert_each_ran_once(1000)


def test_tasks_submitted_while_the_broker_is_down_run_once_it_is_back(migrated, workers, publisher,
                                                                      private_redis):
    url = private_redis["url"]
    publisher(url)
    ids = submit_users(200, prefix="d")  # committed; every publish fails
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).where(Task.published_at.is_(None))) == 200
    private_redis["start"]()
    workers(migrated, url)  # its relay publishes them: no manual step
    all_done(200)
    assert_each_ran_once(200)
    assert len(ids) == 200


def test_a_celery_worker_needs_no_flask_and_releases_every_connection(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    workers(migrated, url, concurrency=1)
    publisher(url)
    submit_users(200, prefix="p")
    all_done(200)
    with db.session_scope() as session:
        report = submit.enqueue(session, "celery_report", {}).id
    done = wait_for(lambda: (row := task(report)).status == "succeeded" and row, message="the report")
    # One: the connection the worker thread holds for its batch (it marked the report running
    # on it); a leaked one would make two.
    assert done.result == {"flask": False, "checked_out": 1}


def task(task_id):
    with db.session_scope() as session:
        return session.get(Task, task_id)


@pytest.fixture
def celery_server(migrated, tmp_path, workers):
    """A web server and a worker with TASK_EXECUTOR=celery, as make run and make celery-worker."""
    url = BROKERS["redis"]
    empty_broker(url)
    workers(migrated, url)
    server = Server(migrated, tmp_path / "web.log", TASK_EXECUTOR="celery", CELERY_BROKER_URL=url,
                    SEED_TASK_DELAY=0.2, TASK_MODULES="tests.celery_tasks", **FAST).start()
    yield server
    server.stop()


def wait_task(server, task_id, *statuses):
    return wait_for(lambda: (body := server.request("GET", f"/api/tasks/{task_id}")[2])["status"]
                    in statuses and body, timeout=60, message=f"task {task_id} to be {statuses}")


def test_progress_cancel_time_limit_retry_and_the_article_routes_as_with_threads(celery_server):
    server = celery_server
    ready = server.request("GET", "/readyz")
    assert ready[0] == 200 and ready[2]["runner"].endswith(":publisher")
    # Progress, then a cancel the task honours.
    status, _, slow = server.request("POST", "/api/tasks", {"name": "celery_progress",
                                                           "args": {"name": "slow", "seconds": 30}})
    assert status == 202
    wait_for(lambda: server.request("GET", f"/api/tasks/{slow['id']}")[2]["progress"] > 0,
             message="progress")
    assert server.request("POST", f"/api/tasks/{slow['id']}/cancel")[0] == 202
    assert wait_task(server, slow["id"], "cancelled", "failed")["status"] == "cancelled"
    # A task that ignores its time limit fails, and what it writes is rolled back.
    stubborn = server.request("POST", "/api/tasks", {"name": "celery_stubborn",
                                                     "args": {"name": "late", "seconds": 8}})[2]
    failed = wait_task(server, stubborn["id"], "failed", "succeeded")
    assert (failed["status"], failed["error"]) == ("failed", "time limit of 0.5s exceeded")
    # Another attempt after a delay kept in the table: the relay publishes it when due.
    again = server.request("POST", "/api/tasks", {"name": "celery_retry_once",
                                                  "args": {"name": "second", "seconds": 0.5}})[2]
    done = wait_task(server, again["id"], "succeeded", "failed")
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    # The article's routes.
    for route in ("/user/thread_pool", "/user/thread"):
        status, headers, body = server.request("GET", route)
        assert (status, body) == (200, "success")
        assert wait_task(server, int(headers["Location"].rsplit("/", 1)[1]), "succeeded")
    users = {u["name"] for u in server.request("GET", "/api/users?page_size=100")[2]}
    assert users == {"second", "thread pool", "thread"}  # no user from the cancelled or stubborn


def test_readyz_says_when_the_broker_is_unreachable_and_submits_still_commit(migrated, tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = Server(migrated, tmp_path / "web.log", TASK_EXECUTOR="celery",
                    CELERY_BROKER_URL=dead).start(ready="/healthz")
    try:
        status, _, body = server.request("GET", "/readyz")
        assert status == 503 and body["details"]["broker"].startswith("unreachable")
        status, _, created = server.request("POST", "/api/tasks", {
            "name": "create_user", "args": {"name": "x", "age": 1}})
        assert status == 202  # committed: a relay publishes it once a broker answers
    finally:
        server.stop()
    assert task(created["id"]).published_at is None


def test_a_fresh_worker_takes_back_what_a_dead_one_left_running(migrated, workers):
    """Nothing new is submitted: the worker's upkeep starts with it, not with its first task."""
    from db.models import utcnow
    import datetime as dt

    url = BROKERS["redis"]
    empty_broker(url)
    with db.session_scope() as session:  # claimed by a worker that died long ago
        task_id = submit.enqueue(session, "create_user", {"name": "orphan", "age": 1}).id
    with db.session_scope() as session:
        session.execute(Task.__table__.update().where(Task.id == task_id).values(
            status="running", owner="gone:1:dead", attempts=1, started_at=utcnow(),
            heartbeat_at=utcnow() - dt.timedelta(minutes=5), published_at=utcnow()))
    workers(migrated, url)
    done = wait_for(lambda: (row := task(task_id)).status == "succeeded" and row, timeout=30,
                    message="the orphan to run")
    assert done.attempts == 2 and counts()[1:] == (1, 1)


def test_the_prefork_pool_runs_tasks_once_too(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    workers(migrated, url, pool="prefork", concurrency=2)
    publisher(url)
    submit_users(300, prefix="f")
    all_done(300)
    assert_each_ran_once(300)
    with db.session_scope() as session:
        pids = {owner.split(":")[1] for owner in session.scalars(select(Task.owner))}
    assert len(pids) == 2  # both children ran tasks, each its own process with its own upkeep


def owner_pids(name):
    """The process ids that ran tasks called name."""
    with db.session_scope() as session:
        return {owner.split(":")[1] for owner in session.scalars(select(Task.owner).where(Task.name == name))}


def submit_mail(count, prefix="m"):
    with db.session_scope() as session:
        return [submit.enqueue(session, "celery_mail", {"name": f"{prefix}{n}"}).id for n in range(count)]


def test_a_queue_is_the_celery_queue_of_its_name_and_a_paused_one_waits(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    general = workers(migrated, url, name="w1", TASK_QUEUES="default")
    mail = workers(migrated, url, name="w2", TASK_QUEUES="mail")
    publisher(url)
    submit_mail(50)
    submit_users(50, prefix="d")
    all_done(100)
    assert owner_pids("celery_mail") == {str(mail.proc.pid)}
    assert owner_pids("create_user") == {str(general.proc.pid)}

    with db.session_scope() as session:
        queues.set_paused(session, "mail", True)
    paused = submit_mail(20, prefix="p")  # published at commit: the mail worker turns each down

    def turned_down():
        with db.session_scope() as session:
            rows = session.execute(select(Task.status, Task.published_at).where(Task.id.in_(paused))).all()
        return all(status == "queued" and published is None for status, published in rows)

    wait_for(turned_down, timeout=30, message="the paused queue's deliveries to be turned down")
    submit_users(20, prefix="e")  # the other queue goes on meanwhile
    wait_for(lambda: counts()[0].get("succeeded") == 120, timeout=60, message="the default queue")
    assert counts()[0] == {"succeeded": 120, "queued": 20}
    with db.session_scope() as session:
        queues.set_paused(session, "mail", False)  # the relay publishes them again
    all_done(140)
    assert_each_ran_once(140)
    assert owner_pids("celery_mail") == {str(mail.proc.pid)}


@pytest.mark.parametrize("setting, value, named", [("DATABASE_URL", "postgresql://u:secret@h/d", "DATABASE_URL"),
                                                   ("TASK_WORKERS", "many", "TASK_WORKERS")])
def test_a_celery_worker_refuses_a_bad_setting_in_one_line(tmp_path, setting, value, named):
    import os
    import sys

    from tests.conftest import ROOT

    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", setting: value}
    finished = subprocess.run([sys.executable, "-m", "celery", "-A", "service.runner.celery", "worker",
                               "-P", "threads", "-c", "1", "--without-gossip", "--without-mingle"],
                              cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    refusal = [line for line in finished.stderr.splitlines() if line.startswith("not starting:")]
    assert len(refusal) == 1 and named in refusal[0] and "secret" not in finished.stderr
    assert "Traceback" not in finished.stderr + finished.stdout


def test_a_chord_through_the_celery_executor_calls_back_once_with_every_result(migrated, workers, publisher):
    from service.runner import chord
    from tests.sample_tasks import step

    url = BROKERS["redis"]
    empty_broker(url)
    publisher(url)
    workers(migrated, url, name="w1", TASK_MODULES="tests.sample_tasks")
    workers(migrated, url, name="w2", TASK_MODULES="tests.sample_tasks")
    with db.session_scope() as session:
        _, started = submit.enqueue(session, chord([step.s(value=n) for n in range(100)], step.s(value=-1)))
    assert len(started) == 100

    def callback():
        with db.session_scope() as session:
            return session.scalars(select(Task).where(Task.id.not_in(started), Task.status == "succeeded")).all()

    [done] = wait_for(callback, timeout=60, message="the callback to succeed")
    assert done.args["results"] == list(range(100))
    assert done.result == sum(range(100)) - 1
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 101


def test_rate_limited_tasks_through_two_celery_workers_keep_their_rate(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    publisher(url)
    for name in ("w1", "w2"):
        workers(migrated, url, name=name, TASK_MODULES="tests.sample_tasks", TASK_POLL_INTERVAL=0.5)
    with db.session_scope() as session:
        ids = [submit.enqueue(session, "rated", {}).id for _ in range(60)]
    rows = wait_finished(ids, timeout=60)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}
    starts = sorted(row.started_at for row in rows.values())
    assert most_in_any_window(starts, dt.timedelta(seconds=1)) == 10


def test_a_key_queued_behind_a_backlog_takes_turns_through_the_celery_executor(migrated, workers, publisher):
    url = BROKERS["redis"]
    empty_broker(url)
    publisher(url)
    workers(migrated, url, TASK_MODULES="tests.sample_tasks", concurrency=4)
    with db.session_scope() as session:  # in turn after another, 5 s of work ahead of b's
        backlog = [submit.enqueue(session, "fair_per_customer", {"customer": "a", "seconds": 0.02}).id
                   for _ in range(1_000)]
    wait_for(lambda: count_started(backlog) >= 20, timeout=30, message="a's backlog to start")
    submitted = utcnow()
    with db.session_scope() as session:
        late = [submit.enqueue(session, "fair_per_customer", {"customer": "b", "seconds": 0.02}).id
                for _ in range(10)]
    rows = wait_finished(late, timeout=60)
    assert count_started(backlog) < 900  # a's backlog was still there: b went through it
    assert max(row.started_at for row in rows.values()) - submitted < dt.timedelta(seconds=2)
    assert {(row.status, row.attempts) for row in rows.values()} == {("succeeded", 1)}


def count_started(ids):
    with db.session_scope() as session:
        return session.scalar(select(func.count()).where(Task.id.in_(ids), Task.started_at.is_not(None)))
