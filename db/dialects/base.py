"""The Dialect every database's class starts from, with the defaults of a database that has
RETURNING, row locks and cheap GROUP BYs (PostgreSQL-like)."""
import contextlib
import dataclasses
import functools

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql

MIGRATION_LOCK_TIMEOUT = 600  # seconds a migration waits for another process's to finish


@dataclasses.dataclass(frozen=True)
class Taking:
    """One way to mark the rows a read picks and get them back as marked, in the two
    shapes a database may need (its Dialect's `take` chooses)."""

    returning: object  # WITH picked AS (the pick) UPDATE ... WHERE id IN (picked) ... RETURNING the columns
    pick: object  # the pick as a read of those columns, locking its rows
    mark: object  # the UPDATE of the picked rows, by :ids
    reread: object = None  # the marked rows read back, for when some changed in between
    as_marked: object = None  # a picked row as the UPDATE left it (None: as it was)
    returning_inline: object = None  # `returning` with the pick as a subquery: it starts with UPDATE


class MigrationLockTimeout(RuntimeError):
    """Another process held the migration lock for longer than MIGRATION_LOCK_TIMEOUT."""


class Dialect:
    """What the service needs to know of one database, as attributes and methods."""

    name = "default"
    backends = ()  # SQLAlchemy's names for it (a URL's backend, a dialect's name)
    drivers = ()  # the SQLAlchemy dialect+driver names the service runs this database on
    one_writer = False  # one write transaction at a time: claims may ride in a finishing task's commit
    partial_indexes = False  # CREATE INDEX ... WHERE: the few-row indexes of db.models exist
    # An index scan past `column IS NULL` terms reads the next columns in order (as past
    # `column = value`): ix_tasks_claim serves the plain claim; else ix_tasks_plain does.
    is_null_keeps_order = True
    primary_key_hint = None  # (hint, dialect names) that makes an UPDATE by ids use the primary key
    transient_codes = frozenset()  # driver error codes another attempt may not hit
    transient_words = ()  # words in a driver error message that mean the same
    transient_states = frozenset()  # SQLSTATEs (a driver error's sqlstate) that mean the same
    transient_state_classes = ()  # SQLSTATE classes (first two characters) that do
    column_types = {}  # role (db.models) -> this database's own column type for it
    # The pool's rollback on check-in goes to the server, so a connection checked in
    # without error was alive then (a driver may skip it when no transaction is open).
    checkin_reaches_server = True
    # Request threads of a process that serves requests and runs no tasks: its requests
    # mostly wait for their group's commit, and more of them at once make bigger groups.
    web_threads = 16

    def count_held(self, grouped, names):
        """Reserved or running rows per (name, status): grouped() counts them with a GROUP BY,
        names() reads one (name, status) per row to count here. Here: grouped()."""
        return grouped()

    def refuse_url(self, url):
        """ValueError if the service cannot run on this URL (checked before anything connects)."""

    def prepare(self, url):
        """Make what the database needs before the first connection."""

    def missing_database(self, url):
        """Why the database at url surely does not exist yet, or None if it may."""

    def take(self, connection, taking, params):
        """Mark the rows taking picks and return them as marked (a Taking), in no order:
        here one UPDATE ... RETURNING, which holds the write lock the least."""
        return connection.execute(taking.returning, params).all()

    def engine_options(self, url, pool_size, max_overflow):
        """create_engine() options for this database."""
        return {"pool_size": pool_size, "max_overflow": max_overflow}

    def on_connect(self, dbapi_connection, connection_record):
        """Set up each new connection (the engine calls it)."""

    def adapt(self, engine):
        """Adjust a new engine to this database (every engine, before its first statement)."""

    def instrument(self, engine):
        """Add this database's engine event listeners (writers that take turns)."""

    def restart_ids(self, session, tables):
        """Make the next row of each (emptied) table get id 1."""

    def create_queued_notice(self, connection):
        """Make what tells other hosts that tasks were queued (the tasks table was just created)."""

    def hush_requeues(self, session):
        """Tasks the session's transaction puts back in the queue from now on wake no other
        process (a claim handing back what it took past its limit)."""

    def listen_for_queued(self, engine, wake):
        """Start calling wake() whenever another process queues tasks, if this database can
        say so; return what stop() ends it, or None (polling alone finds them)."""
        return None

    def insert_or_keep(self, table):
        """An INSERT into table that leaves a row already holding its primary key as it is."""
        return postgresql.insert(table).on_conflict_do_nothing()

    def insert_returning_ids(self, connection, table, rows):
        """Insert rows (dicts) into table; return their ids in row order. One call where the
        driver can say which id is whose, else a row at a time (SQLite: in-process anyway)."""
        if not connection.dialect.insert_executemany_returning_sort_by_parameter_order:
            return [connection.execute(_plain_insert(table), row).inserted_primary_key[0] for row in rows]
        return connection.execute(_returning_insert(table), rows).scalars().all()

    @contextlib.contextmanager
    def migration_lock(self, connection):
        """Hold the database's migration lock on connection (alembic/env.py): processes that
        migrate at once take turns, and each one after the first finds the schema at head."""
        yield


@functools.cache
def _plain_insert(table):
    """table's INSERT (built once)."""
    return insert(table)


@functools.cache
def _returning_insert(table):
    """table's INSERT returning its ids in the order of the rows given (built once)."""
    [primary_key] = table.primary_key.columns
    return insert(table).returning(primary_key, sort_by_parameter_order=True)
