"""The engine, the sessionmaker and the one scoped_session registry.

Two ways to reach the database, one rule each: `Session`, the registry, is
the thread's Session (a request's, or a task's: its writes commit with the
task's outcome), removed at the end of each request and each attempt;
`session_scope()` is a transaction of its own, committed or rolled back at the
end of the block. A HeldConnection only makes a thread's registry Sessions
start on one pooled connection; it hands out no Session itself.
"""
import contextlib
import functools
import logging
import threading
import time

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import scoped_session, sessionmaker

from db.dialects import dialect_for_url

log = logging.getLogger(__name__)

# One registry for request threads and task threads alike; each thread gets its
# own Session and must call Session.remove() when its unit of work ends.
session_factory = sessionmaker(expire_on_commit=False)
_thread = threading.local()  # .held: the HeldConnection this thread's Sessions start on


def _new_registry_session():
    """The registry's factory: a thread holding a connection starts its Session on it."""
    held = getattr(_thread, "held", None)
    return session_factory() if held is None else held._start_session()


Session = scoped_session(_new_registry_session)

_engine = None


def init_engine(url, pool_size=10, max_overflow=10, echo=False, write_turn=False):
    """Create the engine for url, bind the session registry to it and return it.

    write_turn: SQLite's writers take turns (db.dialects.sqlite_turn), worth it where several
    processes write; without, they meet in SQLite's busy handler.
    """
    global _engine
    url = make_url(url)
    dialect = dialect_for_url(url)
    dialect.refuse_url(url)
    dialect.prepare(url)
    options = {"echo": echo, **dialect.engine_options(url, pool_size, max_overflow)}
    if _engine is not None:
        dispose_engine()
    engine = create_engine(url, **options)
    dialect.adapt(engine)
    event.listen(engine, "connect", dialect.on_connect)
    if write_turn:
        dialect.instrument(engine)
    event.listen(engine, "connect", _mark_used)
    if dialect.checkin_reaches_server:
        event.listen(engine, "checkin", _mark_used)
    event.listen(engine, "checkout", functools.partial(_ping_if_idle, engine.dialect))
    Session.remove()
    session_factory.configure(bind=engine)
    _engine = engine
    return engine


PING_AFTER = 1.0  # seconds a pooled connection may sit unused and still be trusted without a ping


def _mark_used(dbapi_connection, connection_record, *_):
    connection_record.info["used_at"] = time.monotonic()


def _ping_if_idle(dialect, dbapi_connection, connection_record, connection_proxy):
    """The pool's liveness check, only for a connection idle longer than PING_AFTER.

    pool_pre_ping pings on every checkout: on MySQL a round trip per request,
    a large share of a submit's time under load. A connection used within the
    last second is as alive as one just pinged; an older one is pinged and, if
    gone, replaced (the pool tries again with a fresh connection). "Used" is the
    last connect, ping or check-in, the last only where check-in reaches the server.
    """
    if time.monotonic() - connection_record.info.get("used_at", 0.0) <= PING_AFTER:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as error:
        if dialect.is_disconnect(error, dbapi_connection, None):
            raise exc.DisconnectionError(str(error)) from error
        raise
    connection_record.info["used_at"] = time.monotonic()


def warm_pool():
    """Open the pool's connections now (all at once, then back to the pool), so that the
    first requests after start do not each wait for a connect."""
    engine = get_engine()
    connections = []
    try:
        for _ in range(engine.pool.size()):
            connections.append(engine.connect())
    finally:
        for connection in connections:
            connection.close()


def listen_for_queued(wake):
    """Call wake() whenever any process queues tasks, where the database can say so (what it
    returns has stop()); None where polling alone finds them."""
    if _engine is None:
        raise RuntimeError("init_engine() has not been called")
    return dialect_for_url(_engine.url).listen_for_queued(_engine, wake)


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


class HeldConnection:
    """A pooled connection one thread keeps for its registry Sessions while it works.

    Inside `with held:` the thread's registry Sessions start on this connection,
    each still its own Session, removed when its unit ends; so units that follow
    each other pay the pool's checkout and liveness ping once, not every time.
    A connection left unused for longer than FRESH_FOR goes back through the pool
    (and its ping) first, as one lost or left mid-transaction does.
    """

    FRESH_FOR = 1.0  # seconds after the last Session started on it that the next one trusts it unpinged

    def __init__(self):
        self._connection = None
        self._handed_out = 0.0  # time.monotonic() of the last Session started on it

    def __enter__(self):
        _thread.held = self
        return self

    def __exit__(self, *exc_info):
        _thread.held = None
        self.release()

    def _start_session(self):
        """A new Session on the held connection (checked out again if stale or broken); only the
        registry's factory calls it."""
        held, now = self._connection, time.monotonic()
        if held is not None and (held.invalidated or held.in_transaction()
                                 or now - self._handed_out > self.FRESH_FOR):
            self.release()
        if self._connection is None:
            try:
                self._connection = get_engine().connect()
            except Exception:
                # Making a Session must not raise: this one checks out when first
                # used and meets the error there, where the unit handles its errors.
                return session_factory()
        self._handed_out = now
        # control_fully: writes a unit makes on the connection itself (through
        # Session.get_bind()) commit or roll back with its Session.
        return session_factory(bind=self._connection, join_transaction_mode="control_fully")

    def release(self):
        """Give the connection back to the pool (a thread does before it idles)."""
        held, self._connection = self._connection, None
        if held is not None:
            try:
                held.close()
            except Exception:  # a broken connection is the pool's to discard
                log.warning("could not return a held connection to the pool", exc_info=True)
