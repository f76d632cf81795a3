"""Run the service as a real gunicorn (or worker) process for tests and benchmarks."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from alembic import command
from alembic.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def migrate(url):
    """alembic upgrade head on url."""
    config = Config(os.path.join(ROOT, "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method, url, body=None, timeout=30):
    """Send one request; return (status, headers, decoded JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    return status, headers, json.loads(raw) if raw else None


class Process:
    """A service process with its own environment and log file."""

    def __init__(self, args, db_url, log_path, **env):
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, "DATABASE_URL": db_url, "LOG_LEVEL": "INFO",
                    **{k: str(v) for k, v in env.items()}}
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def signal(self, signum):
        """Send signum to the whole process group (master and its workers)."""
        os.killpg(self.proc.pid, signum)

    def wait(self, timeout):
        """Wait for exit; return the exit code."""
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()

    def output(self):
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")


# The layout the tests were written for; a server started with machine_defaults=True
# gets what load_config chooses for this machine instead (service.config.default_layout).
TEST_LAYOUT = {"WEB_WORKERS": 1, "WEB_THREADS": 8, "TASK_WORKERS": 4, "TASK_PROCESSES": 0}


class Server(Process):
    """gunicorn serving create_app() on a free port."""

    def __init__(self, db_url, log_path, machine_defaults=False, **env):
        if not machine_defaults:
            env = {**TEST_LAYOUT, **env}
        self.port = int(env.pop("PORT", 0)) or free_port()
        super().__init__([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"],
                         db_url, log_path, PORT=self.port, HOST="127.0.0.1", **env)
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30, ready="/readyz"):
        """Start and wait until ready answers 200 (/healthz: until it answers at all)."""
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.output()}")
            try:
                if self.request("GET", ready, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.output()}")

    def request(self, method, path, body=None, timeout=30):
        return http(method, self.base + path, body, timeout)

    def pids(self):
        """The master's pid and its workers' pids."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        return [self.proc.pid] + [int(pid) for pid in children]


class Worker(Process):
    """python -m service.worker."""

    def __init__(self, db_url, log_path, **env):
        super().__init__([sys.executable, "-m", "service.worker"], db_url, log_path, **env)


class CeleryWorker(Process):
    """celery -A service.runner.celery worker, with the Celery tests' tasks (TASK_MODULES)."""

    def __init__(self, db_url, log_path, broker, name="w1", pool="threads", concurrency=4, **env):
        args = [sys.executable, "-m", "celery", "-A", "service.runner.celery", "worker",
                "-P", pool, "-c", str(concurrency), "-n", f"{name}@%h",
                "--without-gossip", "--without-mingle",
                "--loglevel", "INFO"]
        super().__init__(args, db_url, log_path, TASK_EXECUTOR="celery", CELERY_BROKER_URL=broker,
                         **{"TASK_MODULES": "tests.celery_tasks", **env})

    def start(self, timeout=30):
        """Start and wait until Celery says the worker is ready."""
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited:\n{self.output()}")
            if " ready." in self.output():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"celery worker not ready in {timeout}s:\n{self.output()}")
