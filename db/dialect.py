"""What SQLite and MySQL/MariaDB do differently, in one place: a class per database.

As huey keeps each storage's differences as class attributes, each Dialect
says how its database claims rows, which hints its statements need, which
errors are worth another attempt and how its engine is set up. Everything
else in db/ asks `dialect_of(session)` instead of testing a name.
"""
import contextlib
import dataclasses
import functools
import hashlib
import os

from sqlalchemy import event, insert, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from db import multirow, write_turn

SQLITE_BUSY_TIMEOUT_MS = 30_000
MYSQL_POOL_RECYCLE = 3600  # well under MySQL's default wait_timeout (8 h)
MYSQL_CONNECT_TIMEOUT = 10  # seconds
MYSQL_WRITE_TIMEOUT = 30  # seconds to send one request
MYSQL_READ_TIMEOUT = 600  # seconds to wait for one answer: the longest query a task may run
MIGRATION_LOCK_TIMEOUT = 600  # seconds a migration waits for another process's to finish


@dataclasses.dataclass(frozen=True)
class Taking:
    """One way to mark the rows a read picks and get them back as marked, in the two
    shapes a database may need (its Dialect's `take` chooses)."""

    returning: object  # UPDATE ... WHERE id IN (the pick) ... RETURNING the columns
    pick: object  # the pick as a read of those columns, locking its rows
    mark: object  # the UPDATE of the picked rows, by :ids
    reread: object = None  # the marked rows read back, for when some changed in between
    as_marked: object = None  # a picked row as the UPDATE left it (None: as it was)


class MigrationLockTimeout(RuntimeError):
    """Another process held the migration lock for longer than MIGRATION_LOCK_TIMEOUT."""


class Dialect:
    """The defaults: a database with RETURNING, row locks and cheap GROUP BYs (PostgreSQL-like)."""

    name = "default"
    one_writer = False  # one write transaction at a time: claims may ride in a finishing task's commit
    primary_key_hint = None  # (hint, dialect names) that makes an UPDATE by ids use the primary key
    count_running_by_reading = False  # GROUP BY over running rows picks a bad index: count in Python
    transient_codes = frozenset()  # driver error codes another attempt may not hit
    transient_words = ()  # words in a driver error message that mean the same

    def take(self, connection, taking, params):
        """Mark the rows taking picks and return them as marked (a Taking), in no order:
        here one UPDATE ... RETURNING, which holds the write lock the least."""
        return connection.execute(taking.returning, params).all()

    def engine_options(self, url, pool_size, max_overflow):
        """create_engine() options for this database."""
        return {"pool_size": pool_size, "max_overflow": max_overflow}

    def on_connect(self, dbapi_connection, connection_record):
        """Set up each new connection (the engine calls it)."""

    def instrument(self, engine):
        """Add this database's engine event listeners."""

    def check_url(self, url):
        """Refuse a URL this database cannot serve the service with (ValueError)."""

    def restart_ids(self, session, tables):
        """Make the next row of each (emptied) table get id 1."""

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


class SQLite(Dialect):
    name = "sqlite"
    one_writer = True
    count_running_by_reading = True  # it scans the table through ix_tasks_name_id otherwise
    transient_words = ("database is locked", "database table is locked", "busy",
                       "unable to open database file")

    def engine_options(self, url, pool_size, max_overflow):
        # Writers take turns instead of polling in the busy handler (db.write_turn).
        factory = functools.partial(write_turn.TurnConnection, turn=write_turn.turn_path(url.database))
        return {"pool_size": pool_size, "max_overflow": max_overflow,
                "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": factory}}

    def instrument(self, engine):
        """Each write waits for its connection's write turn first."""
        event.listen(engine, "before_cursor_execute", write_turn.take_turn_before_writes)

    def on_connect(self, dbapi_connection, connection_record):
        """WAL, the busy timeout and foreign keys on every new connection."""
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    def restart_ids(self, session, tables):
        """Nothing to do: SQLite reuses rowids once a table is empty."""

    def insert_or_keep(self, table):
        return sqlite.insert(table).on_conflict_do_nothing()

    def check_url(self, url):
        """A file database only (each connection to :memory: is its own, empty database); make its directory."""
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            raise ValueError(
                "SQLite must be a file database (each connection to :memory: is a "
                "separate, empty database); use sqlite:///var/app.db"
            )
        os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)

    @contextlib.contextmanager
    def migration_lock(self, connection):
        """Run the migrations in one write transaction (BEGIN IMMEDIATE): the next process waits
        for its commit, then reads the version it left. SQLite's DDL is transactional, so a run
        that fails leaves nothing behind; alembic sees a transaction begun outside and makes none."""
        connection.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_LOCK_TIMEOUT * 1000}")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


class MySQL(Dialect):
    name = "mysql"
    # Left to itself an UPDATE by ids may go through the status index, locking the
    # entries finishing tasks change at the same time: the two deadlock.
    primary_key_hint = ("FORCE INDEX (PRIMARY)", ("mysql", "mariadb"))
    transient_codes = frozenset({
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout
        1213,  # deadlock
        1927,  # connection was killed
        2002,  # can't connect (socket)
        2003,  # can't connect (TCP)
        2006,  # server has gone away
        2013,  # lost connection during query
        2055,  # lost connection (system error)
        4031,  # disconnected by the server for inactivity
    })

    def take(self, connection, taking, params):
        """MariaDB's UPDATE has no RETURNING (nor MySQL's): read the picked rows and lock them
        (SKIP LOCKED keeps racing takers off each other's), then mark them by id."""
        rows = connection.execute(taking.pick, params).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        marked = connection.execute(taking.mark, {**params, "ids": ids}).rowcount
        if marked != len(ids) and taking.reread is not None:  # unlocked rows changed: ask
            return connection.execute(taking.reread, {**params, "ids": ids}).all()
        return [taking.as_marked(row) for row in rows] if taking.as_marked else rows

    def insert_returning_ids(self, connection, table, rows):
        """MariaDB: one multi-row INSERT ... RETURNING, its SQL built once per row count
        (written with %s placeholders: for a driver that takes others, the generic way)."""
        if (connection.dialect.paramstyle not in ("format", "pyformat")
                or not connection.dialect.insert_executemany_returning_sort_by_parameter_order):  # MySQL 8
            return super().insert_returning_ids(connection, table, rows)
        return multirow.insert_returning_ids(connection, table, rows)

    def restart_ids(self, session, tables):
        """ALTER TABLE ... AUTO_INCREMENT = 1 (ALTER commits: call it after the delete's commit)."""
        for table in tables:
            session.execute(text(f"ALTER TABLE {table.name} AUTO_INCREMENT = 1"))
        session.commit()

    def insert_or_keep(self, table):
        """ON DUPLICATE KEY UPDATE a no-op, not INSERT IGNORE: it locks the row it met for
        update (not shared), so submits that meet one key queue for it, never deadlock,
        and IGNORE would hide errors other than the duplicate."""
        statement = mysql.insert(table)
        key = table.primary_key.columns[0].name
        return statement.on_duplicate_key_update({key: statement.inserted[key]})

    @contextlib.contextmanager
    def migration_lock(self, connection):
        """GET_LOCK a name per database for the run, RELEASE_LOCK after. The lock belongs to the
        session, not a transaction: MySQL's DDL commits as it goes, and alembic's own
        transactions are left as they were (committed around the lock calls)."""
        name = _lock_name("migrations", connection.exec_driver_sql("SELECT DATABASE()").scalar())
        taken = connection.exec_driver_sql("SELECT GET_LOCK(%s, %s)",
                                           (name, MIGRATION_LOCK_TIMEOUT)).scalar()
        connection.commit()
        if taken != 1:
            raise MigrationLockTimeout(f"another process held the migration lock {name!r} "
                                       f"for over {MIGRATION_LOCK_TIMEOUT}s")
        try:
            yield
        finally:
            connection.rollback()  # what a failed run left open, so that the release runs
            connection.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
            connection.commit()

    def engine_options(self, url, pool_size, max_overflow):
        return {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_recycle": MYSQL_POOL_RECYCLE,
            # Gap locks under REPEATABLE READ make concurrent claims deadlock-prone.
            "isolation_level": "READ COMMITTED",
            # Without socket timeouts a wedged connection blocks a thread forever
            # (seen: a pool pre-ping stuck in send for tens of seconds).
            "connect_args": {"connect_timeout": MYSQL_CONNECT_TIMEOUT,
                             "read_timeout": MYSQL_READ_TIMEOUT,
                             "write_timeout": MYSQL_WRITE_TIMEOUT},
        }


def _lock_name(purpose, database):
    """A GET_LOCK name for purpose on this database (the server's locks are shared by all
    its databases); MySQL takes 64 characters at most."""
    name = f"{purpose}:{database}"
    return name if len(name) <= 64 else f"{purpose}:{hashlib.sha256(name.encode()).hexdigest()[:40]}"


@functools.cache
def _plain_insert(table):
    """table's INSERT (built once)."""
    return insert(table)


@functools.cache
def _returning_insert(table):
    """table's INSERT returning its ids in the order of the rows given (built once)."""
    [primary_key] = table.primary_key.columns
    return insert(table).returning(primary_key, sort_by_parameter_order=True)


DIALECTS = {"sqlite": SQLite(), "mysql": MySQL(), "mariadb": MySQL()}
DEFAULT = Dialect()


def dialect_named(name):
    """The Dialect for a SQLAlchemy dialect or backend name."""
    return DIALECTS.get(name, DEFAULT)


def dialect_of(session_or_bind):
    """The Dialect of what a Session, Connection or Engine talks to."""
    bind = session_or_bind.get_bind() if hasattr(session_or_bind, "get_bind") else session_or_bind
    return dialect_named(bind.dialect.name)


def by_primary_key(statement):
    """Hint an UPDATE that names its rows by id to find them through the primary key (MySQL)."""
    hint, names = MySQL.primary_key_hint
    for name in names:
        statement = statement.with_hint(hint, dialect_name=name)
    return statement


def is_transient(error):
    """True for database errors that another attempt may not hit (on any database)."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    code = orig.args[0] if getattr(orig, "args", None) else None
    if isinstance(code, int) and any(code in d.transient_codes for d in DIALECTS.values()):
        return True
    text = str(orig).lower()
    return any(word in text for d in DIALECTS.values() for word in d.transient_words)
