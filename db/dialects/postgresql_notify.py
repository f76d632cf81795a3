"""PostgreSQL wake-ups across hosts: the tasks table NOTIFYs when tasks are queued, and every
process that runs tasks LISTENs on a connection of its own.

The NOTIFY comes from triggers (QUEUED_NOTICE), so it is part of the transaction that queued
the tasks: it reaches listeners when that transaction commits, and never if it rolls back.
Identical notices of one transaction reach each listener once. A listener that loses its
connection (a database restart) connects again, listens again and wakes its process once,
for what it may have missed; polling finds everything else.
"""
import logging
import threading
import time

CHANNEL = "tasks_queued"

# Made with the tasks table (create_all) and by migration 0011, which holds the same text.
QUEUED_NOTICE = (
    "DROP TRIGGER IF EXISTS tasks_queued_insert ON tasks",
    "DROP TRIGGER IF EXISTS tasks_queued_update ON tasks",
    f"""CREATE OR REPLACE FUNCTION tasks_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$""",
    # One notice per INSERT statement, however many rows it adds.
    "CREATE TRIGGER tasks_queued_insert AFTER INSERT ON tasks "
    "FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_queued()",
    # A task back in the queue and due within a second (a process stopping or lost, a
    # retry); not one a claim hands back in its own transaction (QUIET).
    "CREATE TRIGGER tasks_queued_update AFTER UPDATE OF status ON tasks FOR EACH ROW "
    "WHEN (NEW.status = 'queued' AND OLD.status <> 'queued' "
    "AND NEW.run_after <= (now() AT TIME ZONE 'UTC') + interval '1 second' "
    "AND current_setting('tasks.quiet', true) IS DISTINCT FROM 'on') "
    "EXECUTE FUNCTION tasks_notify_queued()",
)
# Set for the rest of a transaction, it keeps the update trigger quiet.
QUIET = "SELECT set_config('tasks.quiet', 'on', true)"

RETRY_FIRST = 0.1  # seconds before the first reconnect; doubled per failure
RETRY_MAX = 5.0  # longest wait between reconnects
WAIT_STEP = 0.5  # seconds a wait for notices lasts before it looks at `stopped` again
# A connection whose server vanished without closing it (a host gone, a network cut) is
# found out: idle, by keepalives within about a minute; with a request unanswered by the
# network (tcp_user_timeout), within 30 s. A slow query is not cut short by either.
TCP_OPTIONS = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
               "keepalives_count": 3, "tcp_user_timeout": 30_000}
CONNECT_OPTIONS = {"connect_timeout": 10, **TCP_OPTIONS}

log = logging.getLogger(__name__)


class QueuedListener:
    """A daemon thread that LISTENs on CHANNEL and calls wake() for each notice and after each
    (re)connect. `listening` is set while it listens; stop() ends it."""

    def __init__(self, engine, wake):
        self._engine = engine
        self._wake = wake
        self.listening = threading.Event()
        self.connects = 0  # connections it has listened on (a reconnect adds one)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-listen", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=2 * WAIT_STEP):
        """Stop listening; waits at most timeout seconds for the thread (its wait ends by then)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self):
        delay = RETRY_FIRST / 2
        while not self._stopped.is_set():
            self._listened_at = None
            try:
                self._listen()
            except Exception as error:  # the server gone, restarting or refusing: try again
                lost = self.listening.is_set()
                self.listening.clear()
                # At once after a connection that lasted; backing off from one that fails soon.
                lasted = lost and time.monotonic() - self._listened_at > RETRY_MAX
                delay = RETRY_FIRST if lasted else min(delay * 2, RETRY_MAX)
                log.warning("%s for %s (%s); connecting again in %gs",
                            "lost the connection listening" if lost else "could not listen",
                            CHANNEL, error, delay)
                self._stopped.wait(delay)
        self.listening.clear()

    def _listen(self):
        """Listen on one connection until it fails or stop() is called."""
        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        connection = self._engine.dialect.loaded_dbapi.connect(*args, **{**params, **CONNECT_OPTIONS},
                                                                 autocommit=True)
        with connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self.connects += 1
            self._listened_at = time.monotonic()
            self.listening.set()
            self._wake()  # what was queued while no one listened
            while not self._stopped.is_set():
                for _ in connection.notifies(timeout=WAIT_STEP, stop_after=1):
                    self._wake()
