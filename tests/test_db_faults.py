"""Database server faults under a running service: killed connections and a server restart
(MariaDB and PostgreSQL)."""
import os
import shutil
import socket
import subprocess

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.bench.client import load
from tests.conftest import BACKEND, FAST, all_succeeded, counts, server_only, wait_for
from tests.server import Server, migrate
from tests.server_sql import kill_connection_sql, other_connection_ids_sql

pytestmark = [pytest.mark.slow, server_only]

MARIADBD = "/usr/sbin/mariadbd"
PG_CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect"]


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    engine = create_engine(empty_db, pool_pre_ping=True)
    yield empty_db, engine
    engine.dispose()


def kill_other_connections(engine):
    """Cut off every connection to this database but our own; return how many."""
    name = engine.dialect.name
    with engine.connect() as connection:
        ids = connection.execute(other_connection_ids_sql(name)).scalars().all()
        for connection_id in ids:
            try:
                connection.execute(kill_connection_sql(name, connection_id))
            except Exception:
                pass  # it ended on its own meanwhile
    return len(ids)


def port_open():
    port = 5432 if BACKEND == "postgresql" else 3306
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def serve_tasks(url, tmp_path, total, name):
    """Start a server and submit total create_user tasks of 50 ms each."""
    server = Server(url, tmp_path / "server.log", **FAST).start()
    try:
        load(server.port, "POST", "/api/tasks",
             {"name": "create_user", "args": {"name": name, "age": 1, "delay": 0.05}}, total, 8)
    except BaseException:
        server.stop()
        raise
    return server


def test_killed_connections_mid_run_lose_no_task(migrated_db, tmp_path):
    url, engine = migrated_db
    server = serve_tasks(url, tmp_path, 400, "k")
    try:
        for _ in range(6):  # each round waits for the runner to have reconnected
            wait_for(lambda: kill_other_connections(engine), message="a connection to kill")
        by_status, users = wait_for(lambda: all_succeeded(engine, 400), timeout=120,
                                    message="400 tasks after the kills")
        assert by_status == {"succeeded": 400}
        assert users[0] == 400
        assert server.request("GET", "/readyz")[0] == 200
    finally:
        server.stop()


class MariaDB:
    """Stops and starts the local MariaDB."""

    name = "MariaDB"

    def running(self):
        return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0

    def restartable(self):
        return os.path.exists(MARIADBD) and shutil.which("start-stop-daemon")

    def shut_down(self, engine):
        try:
            with engine.connect() as connection:
                connection.execute(text("SHUTDOWN"))
        except OperationalError:
            pass  # the server may drop our own connection on its way down

    def start(self):
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", MARIADBD],
                       check=True)


class PostgreSQL:
    """Stops and starts the local PostgreSQL cluster (Debian's pg_ctlcluster)."""

    name = "PostgreSQL"

    def version(self):
        return sorted(os.listdir("/etc/postgresql"))[-1]

    def running(self):
        return subprocess.run(["pgrep", "-f", "postgresql/.*/bin/postgres"], capture_output=True).returncode == 0

    def restartable(self):
        return shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql")

    def shut_down(self, engine):
        subprocess.run([*PG_CLUSTER, self.version(), "main", "stop", "-m", "fast"], check=True)

    def start(self):
        subprocess.run([*PG_CLUSTER, self.version(), "main", "start"], check=True)


SERVER = PostgreSQL() if BACKEND == "postgresql" else MariaDB()


def restartable():
    return os.geteuid() == 0 and bool(SERVER.restartable())


def shut_down_server(engine):
    """Ask the server to shut down and wait until its process is gone."""
    SERVER.shut_down(engine)
    wait_for(lambda: not SERVER.running(), timeout=120, message=f"{SERVER.name} to exit")


def start_server():
    """Start the server again (after any shutdown in progress) and wait for its port."""
    wait_for(lambda: not SERVER.running() or port_open(), timeout=120,
             message=f"{SERVER.name} to finish shutting down")
    SERVER.start()
    wait_for(port_open, timeout=60, message=f"{SERVER.name} to start")


@pytest.mark.skipif(not restartable(), reason="cannot restart the database server from this test")
def test_a_server_restart_mid_run_loses_no_task_and_readyz_follows(migrated_db, tmp_path):
    url, engine = migrated_db
    server = serve_tasks(url, tmp_path, 300, "r")
    try:
        wait_for(lambda: counts(engine)[0].get("succeeded", 0) >= 30, message="30 done")
        try:
            shut_down_server(engine)
            assert server.request("GET", "/readyz", timeout=20)[0] == 503
        finally:
            start_server()  # whatever happened, leave the server running for the rest
        wait_for(lambda: server.request("GET", "/readyz")[0] == 200, timeout=60,
                 message="readyz 200 again")
        by_status, users = wait_for(lambda: all_succeeded(engine, 300), timeout=120,
                                    message="300 tasks after the restart")
        assert by_status == {"succeeded": 300}
        assert users[0] == 300
    finally:
        server.stop()
