"""PostgreSQL (psycopg 3): row locks, SKIP LOCKED, RETURNING, partial indexes, advisory locks."""
import contextlib
import hashlib

from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from db.dialects.base import MIGRATION_LOCK_TIMEOUT, Dialect, MigrationLockTimeout
from db.dialects.postgresql_notify import QUEUED_NOTICE, QUIET, TCP_OPTIONS, QueuedListener

POSTGRES_POOL_RECYCLE = 3600  # connections older than this are replaced (a restarted server, a proxy)
POSTGRES_CONNECT_TIMEOUT = 10  # seconds


class PostgreSQL(Dialect):
    """PostgreSQL: the base Dialect's one UPDATE ... WHERE id IN (... FOR UPDATE SKIP LOCKED)
    RETURNING claim, partial indexes on the few-row states, LISTEN/NOTIFY wake-ups."""

    name = "postgresql"
    backends = ("postgresql",)
    drivers = ("postgresql+psycopg",)
    partial_indexes = True
    is_null_keeps_order = False  # IS NULL is no equality to its planner: it would sort
    # SQLSTATEs another attempt may not hit: serialization failure, deadlock, lock not
    # available, the server shutting down or starting, too many connections.
    transient_states = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})
    transient_state_classes = ("08",)  # connection exceptions
    # A failed connect carries no SQLSTATE: its message says what happened.
    transient_words = ("connection failed", "connection timeout expired",
                       "server closed the connection unexpectedly", "the database system is",
                       "too many clients")
    # psycopg's rollback sends nothing outside a transaction: a connection the server
    # cut off checks in without a word, so check-in proves nothing about it.
    checkin_reaches_server = False

    def refuse_url(self, url):
        """psycopg is an extra (postgres): say so, not a ModuleNotFoundError traceback."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ValueError("postgresql+psycopg needs the psycopg package: "
                             "pip install 'flask-durable-tasks[postgres]' (make install brings it)") from None

    def engine_options(self, url, pool_size, max_overflow):
        return {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_recycle": POSTGRES_POOL_RECYCLE,
            "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT, **TCP_OPTIONS},
        }

    def create_queued_notice(self, connection):
        """The triggers that NOTIFY in the transaction that queues tasks (postgresql_notify)."""
        for statement in QUEUED_NOTICE:
            connection.exec_driver_sql(statement)

    def hush_requeues(self, session):
        """A setting local to the transaction that the update trigger's WHEN reads."""
        session.execute(text(QUIET))

    def listen_for_queued(self, engine, wake):
        """A connection of its own LISTENs and wakes this process (postgresql_notify)."""
        return QueuedListener(engine, wake).start()

    def insert_or_keep(self, table):
        """ON CONFLICT DO UPDATE a no-op, not DO NOTHING: it locks the row it met, so
        claimers or submits that meet one key queue for it (as on MySQL)."""
        statement = postgresql.insert(table)
        key = table.primary_key.columns[0].name
        return statement.on_conflict_do_update(index_elements=[key], set_={key: statement.excluded[key]})

    def restart_ids(self, session, tables):
        """Each (emptied) table's id sequence starts again at 1."""
        for table in tables:
            [primary_key] = table.primary_key.columns
            session.execute(text("SELECT setval(pg_get_serial_sequence(:table, :column), 1, false)"),
                            {"table": table.name, "column": primary_key.name})
        session.commit()

    @contextlib.contextmanager
    def migration_lock(self, connection):
        """pg_advisory_lock on a key per database for the run (a session lock: it outlives
        alembic's transaction), pg_advisory_unlock after; waits at most MIGRATION_LOCK_TIMEOUT."""
        database = connection.exec_driver_sql("SELECT current_database()").scalar()
        key = _lock_key("migrations", database)
        # For this transaction only: the role's or database's own lock_timeout stays for the run.
        connection.exec_driver_sql("SELECT set_config('lock_timeout', %(timeout)s, true)",
                                   {"timeout": f"{MIGRATION_LOCK_TIMEOUT}s"})
        try:
            connection.exec_driver_sql("SELECT pg_advisory_lock(%(key)s)", {"key": key})
        except Exception as error:
            # 55P03: our lock_timeout; 57014: a statement_timeout shorter than it.
            if getattr(getattr(error, "orig", None), "sqlstate", None) in ("55P03", "57014"):
                raise MigrationLockTimeout(f"another process held the migration lock of {database!r} "
                                           f"for over {MIGRATION_LOCK_TIMEOUT}s") from error
            raise
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()  # what a failed run left open, so that the unlock runs
            connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": key})
            connection.commit()


def _lock_key(purpose, database):
    """A bigint advisory lock key for purpose on this database (the server's advisory locks
    are per database already; the purpose keeps ours apart from an application's)."""
    digest = hashlib.sha256(f"flask-durable-tasks:{purpose}:{database}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
