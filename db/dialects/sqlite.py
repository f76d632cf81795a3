"""SQLite: one file, one writer at a time; its writers may take turns (db.dialects.sqlite_turn)."""
import collections
import contextlib
import functools
import os

from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler

from db.dialects import sqlite_turn
from db.dialects.base import MIGRATION_LOCK_TIMEOUT, Dialect

SQLITE_BUSY_TIMEOUT_MS = 30_000


class SQLite(Dialect):
    """One file, one writer at a time (WAL), RETURNING, no row locks."""

    name = "sqlite"
    backends = ("sqlite",)
    drivers = ("sqlite", "sqlite+pysqlite")
    one_writer = True
    partial_indexes = True
    # Its one writer serves the task process too: more request threads at once doubled the p99.
    web_threads = 12
    transient_words = ("database is locked", "database table is locked", "busy",
                       "unable to open database file")
    # Left to itself an UPDATE by ids reads every queued row: its planner takes the status
    # term to the claim index, which holds them all, over the ids to the rowid.
    primary_key_hint = ("NOT INDEXED", ("sqlite",))

    def take(self, connection, taking, params):
        """The one UPDATE ... RETURNING, with the pick inline: pysqlite opens its transaction
        only before a statement that starts with INSERT, UPDATE, DELETE or REPLACE, so a
        WITH ... UPDATE would commit on its own, outside the caller's transaction."""
        return connection.execute(taking.returning_inline, params).all()

    def engine_options(self, url, pool_size, max_overflow):
        # Writers take turns instead of polling in the busy handler (db.dialects.sqlite_turn).
        factory = functools.partial(sqlite_turn.TurnConnection, turn=sqlite_turn.turn_path(url.database))
        return {"pool_size": pool_size, "max_overflow": max_overflow,
                "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": factory}}

    def instrument(self, engine):
        """Each write waits for its connection's write turn first."""
        event.listen(engine, "before_cursor_execute", sqlite_turn.take_turn_before_writes)

    def adapt(self, engine):
        """Table hints (primary_key_hint) are written out."""
        engine.dialect.statement_compiler = _HintingCompiler

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

    def refuse_url(self, url):
        """A file database only: each connection to :memory: is its own, empty database."""
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            raise ValueError("SQLite must be a file database, such as sqlite:///var/app.db "
                             "(each connection to :memory: is a separate, empty one)")

    def prepare(self, url):
        """Make the file's directory (SQLite makes the file)."""
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)

    def missing_database(self, url):
        """No file yet: connecting would create an empty one and hide a mistyped path."""
        return None if os.path.exists(url.database) else f"no SQLite database at {url.database}"

    def count_held(self, grouped, names):
        """Held rows are few (workers and their prefetch): read and count them here, since
        with any GROUP BY SQLite scans the table through ix_tasks_name_id."""
        return collections.Counter(names())

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


class _HintingCompiler(SQLiteCompiler):
    """SQLite's compiler, writing a table's hint after its name (SQLAlchemy's drops it):
    `UPDATE tasks NOT INDEXED ...` still finds rows by rowid, through no index."""

    def get_from_hint_text(self, table, text):
        return text
