"""MariaDB faults under a running server: killed connections and a server restart."""
import os
import shutil
import socket
import subprocess

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.bench.client import load
from tests.conftest import mysql_only, wait_for
from tests.server import Server, migrate
from tests.conftest import FAST, all_succeeded, counts

pytestmark = [pytest.mark.slow, mysql_only]

MARIADBD = "/usr/sbin/mariadbd"


@pytest.fixture
def migrated_db(empty_db):
    migrate(empty_db)
    engine = create_engine(empty_db, pool_pre_ping=True)
    yield empty_db, engine
    engine.dispose()


def kill_other_connections(engine):
    """KILL CONNECTION every connection to this database but our own; return how many."""
    with engine.connect() as connection:
        ids = connection.execute(text(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()")).scalars().all()
        for connection_id in ids:
            try:
                connection.execute(text(f"KILL CONNECTION {int(connection_id)}"))
            except Exception:
                pass  # it ended on its own meanwhile
    return len(ids)


def port_open():
    try:
        socket.create_connection(("127.0.0.1", 3306), timeout=1).close()
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


def mariadbd_running():
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0


def restartable():
    return os.geteuid() == 0 and os.path.exists(MARIADBD) and shutil.which("start-stop-daemon")


def shut_down_mariadb(engine):
    """Ask the server to shut down and wait until its process is gone."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SHUTDOWN"))
    except OperationalError:
        pass  # the server may drop our own connection on its way down
    wait_for(lambda: not mariadbd_running(), timeout=120, message="MariaDB to exit")


def start_mariadb():
    """Start the server again (after any shutdown in progress) and wait for its port."""
    wait_for(lambda: not mariadbd_running() or port_open(), timeout=120,
             message="MariaDB to finish shutting down")
    subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background",
                    "--exec", MARIADBD], check=True)
    wait_for(port_open, timeout=60, message="MariaDB to start")


@pytest.mark.skipif(not restartable(), reason="cannot restart MariaDB from this test")
def test_mariadb_restart_mid_run_loses_no_task_and_readyz_follows(migrated_db, tmp_path):
    url, engine = migrated_db
    server = serve_tasks(url, tmp_path, 300, "r")
    try:
        wait_for(lambda: counts(engine)[0].get("succeeded", 0) >= 30, message="30 done")
        try:
            shut_down_mariadb(engine)
            assert server.request("GET", "/readyz", timeout=20)[0] == 503
        finally:
            start_mariadb()  # whatever happened, leave the server running for the rest
        wait_for(lambda: server.request("GET", "/readyz")[0] == 200, timeout=60,
                 message="readyz 200 again")
        by_status, users = wait_for(lambda: all_succeeded(engine, 300), timeout=120,
                                    message="300 tasks after the restart")
        assert by_status == {"succeeded": 300}
        assert users[0] == 300
    finally:
        server.stop()
