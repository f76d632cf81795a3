"""MySQL and MariaDB: row locks and SKIP LOCKED; MariaDB has INSERT ... RETURNING, neither UPDATE ... RETURNING."""
import contextlib
import functools
import hashlib

from sqlalchemy import text
from sqlalchemy.dialects import mysql

from db.dialects.base import MIGRATION_LOCK_TIMEOUT, Dialect, MigrationLockTimeout

MYSQL_POOL_RECYCLE = 3600  # well under MySQL's default wait_timeout (8 h)
MYSQL_CONNECT_TIMEOUT = 10  # seconds
MYSQL_WRITE_TIMEOUT = 30  # seconds to send one request
MYSQL_READ_TIMEOUT = 600  # seconds to wait for one answer: the longest query a task may run


class MySQL(Dialect):
    """MySQL and MariaDB (PyMySQL): row locks, SKIP LOCKED, no UPDATE ... RETURNING."""

    name = "mysql"
    backends = ("mysql", "mariadb")
    drivers = ("mysql+pymysql", "mariadb+pymysql")
    column_types = {
        "timestamp": mysql.DATETIME(fsp=6),  # microseconds: leases, ordering and timings need them
        # Compared byte for byte, as SQLite and Python compare them (the default collation
        # folds case and accents: "Report" and "report" would be one key).
        "exact key": mysql.VARCHAR(200, collation="utf8mb4_bin"),
    }
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
        return _insert_many_returning_ids(connection, table, rows)

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


def _insert_many_returning_ids(connection, table, rows):
    """Insert rows (dicts with the same keys) into table in one INSERT ... VALUES (...), (...)
    RETURNING id, its SQL written once per row count (SQLAlchemy's executemany builds
    the batch anew on every call); return their ids in row order."""
    keys = tuple(rows[0])
    sql, processors = _statement(connection.dialect, table, keys, len(rows))
    params = tuple(process(row[key]) if process else row[key]
                   for row in rows for key, process in zip(keys, processors))
    # Auto-increment hands out one statement's ids in the order of its VALUES rows
    # (what SQLAlchemy's own insertmanyvalues assumes for MySQL/MariaDB), so the
    # sorted ids are the rows' ids in order, whatever order RETURNING gives them in.
    return sorted(connection.exec_driver_sql(sql, params).scalars())


@functools.lru_cache(maxsize=256)
def _statement(dialect, table, keys, count):
    """(SQL with %s placeholders, each key's bind processor or None) for count rows of keys."""
    quote = dialect.identifier_preparer.quote
    columns = [table.c[key] for key in keys]
    [primary_key] = table.primary_key.columns
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(column.name) for column in columns)}) "
           f"VALUES {', '.join([row] * count)} RETURNING {quote(primary_key.name)}")
    processors = tuple(column.type.dialect_impl(dialect).bind_processor(dialect) for column in columns)
    return sql, processors
