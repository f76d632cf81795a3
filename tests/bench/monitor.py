"""Sample a server's threads, memory and database connections while it works."""
import os
import threading

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.server_sql import other_connection_ids_sql


def proc_status(pid, field):
    """Read one numeric field (Threads, VmRSS in kB) from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class DbConnections:
    """Count connections the server holds to the database."""

    def __init__(self, url):
        self.url = make_url(url)
        self.engine = None
        if self.url.get_backend_name() != "sqlite":
            self.engine = create_engine(self.url, pool_size=1)

    def count(self, pids):
        if self.engine is None:  # SQLite: open descriptors on the database file
            path = os.path.abspath(self.url.database)
            total = 0
            for pid in pids:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        total += os.readlink(f"/proc/{pid}/fd/{fd}") == path
                    except OSError:
                        pass
            return total
        with self.engine.connect() as connection:
            return len(connection.execute(other_connection_ids_sql(self.engine.dialect.name)).all())

    def close(self):
        if self.engine is not None:
            self.engine.dispose()


class Monitor:
    """Background sampler of threads, RSS (MB) and DB connections for the server's pids."""

    def __init__(self, pids, db_url, interval=0.05):
        self.pids = pids
        self.connections = DbConnections(db_url)
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        threads = sum(proc_status(pid, "Threads") for pid in self.pids)
        rss = sum(proc_status(pid, "VmRSS") for pid in self.pids) / 1024
        return {"threads": threads, "rss_mb": rss, "db_connections": self.connections.count(self.pids)}

    def _run(self):
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())

    def __enter__(self):
        self.before = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, key):
        return max([s[key] for s in self.samples] + [self.before[key]])

    def close(self):
        self.connections.close()
