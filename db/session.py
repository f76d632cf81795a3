"""The engine, the sessionmaker and the one scoped_session registry."""
import contextlib
import os

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import scoped_session, sessionmaker

# One registry for request threads and task threads alike; each thread gets its
# own Session and must call Session.remove() when its unit of work ends.
session_factory = sessionmaker(expire_on_commit=False)
Session = scoped_session(session_factory)

_engine = None

SQLITE_BUSY_TIMEOUT_MS = 30_000
MYSQL_POOL_RECYCLE = 3600  # well under MySQL's default wait_timeout (8 h)
MYSQL_CONNECT_TIMEOUT = 10  # seconds
MYSQL_WRITE_TIMEOUT = 30  # seconds to send one request
MYSQL_READ_TIMEOUT = 600  # seconds to wait for one answer: the longest query a task may run


def init_engine(url, pool_size=10, max_overflow=10, echo=False):
    """Create the engine for url, bind the session registry to it and return it."""
    global _engine
    url = make_url(url)
    options = {"echo": echo, "pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        ensure_sqlite_file(url)
        options.update(pool_size=pool_size, max_overflow=max_overflow)
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        options.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=MYSQL_POOL_RECYCLE,
            # Gap locks under REPEATABLE READ make concurrent claims deadlock-prone.
            isolation_level="READ COMMITTED",
            # Without socket timeouts a wedged connection blocks a thread forever
            # (seen: a pool pre-ping stuck in send for tens of seconds).
            connect_args={
                "connect_timeout": MYSQL_CONNECT_TIMEOUT,
                "read_timeout": MYSQL_READ_TIMEOUT,
                "write_timeout": MYSQL_WRITE_TIMEOUT,
            },
        )
    if _engine is not None:
        dispose_engine()
    engine = create_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    Session.remove()
    session_factory.configure(bind=engine)
    _engine = engine
    return engine


def get_engine():
    """Return the engine bound by init_engine."""
    if _engine is None:
        raise RuntimeError("init_engine() has not been called")
    return _engine


def dispose_engine():
    """Close every pooled connection and forget the engine."""
    global _engine
    Session.remove()
    if _engine is not None:
        _engine.dispose()
    _engine = None


@contextlib.contextmanager
def session_scope():
    """Yield a fresh Session (not the thread's registry one); commit or roll back."""
    session = session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ensure_sqlite_file(url):
    """Refuse in-memory SQLite and create the file's directory."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        raise ValueError(
            "SQLite must be a file database (each connection to :memory: is a "
            "separate, empty database); use sqlite:///var/app.db"
        )
    directory = os.path.dirname(os.path.abspath(database))
    os.makedirs(directory, exist_ok=True)


def _configure_sqlite(dbapi_connection, connection_record):
    """Set WAL, the busy timeout and foreign keys on every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
