"""The engine and the session registry."""
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import db
from tests.conftest import backend, mysql_only, postgres_only, server_only
from tests.server_sql import kill_connection_sql, own_connection_id_sql


def test_in_memory_sqlite_is_refused():
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        with pytest.raises(ValueError, match="file database"):
            db.init_engine(url)


def test_sqlite_connections_get_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = db.init_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    try:
        connections = [engine.connect() for _ in range(3)]  # each one is configured
        for connection in connections:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        for connection in connections:
            connection.close()
    finally:
        db.dispose_engine()


@mysql_only
def test_mysql_pool_recycles_and_sets_isolation_and_timeouts(db_url):
    engine = db.init_engine(db_url, pool_size=12, max_overflow=3)
    try:
        # SQLAlchemy's and PyMySQL's own attributes: neither says its recycle age or socket timeouts otherwise.
        assert 0 < engine.pool._recycle < 28800
        assert engine.pool.size() == 12
        with engine.connect() as connection:
            assert connection.get_isolation_level() == "READ COMMITTED"
            raw = connection.connection.dbapi_connection
            assert (raw._read_timeout, raw._write_timeout) == (600, 30)
    finally:
        db.dispose_engine()


def test_a_connection_is_pinged_only_after_sitting_idle(database, monkeypatch):
    pings = []
    real_ping = database.dialect.do_ping
    monkeypatch.setattr(database.dialect, "do_ping", lambda raw: pings.append(raw) or real_ping(raw))
    for _ in range(3):  # used a moment ago: trusted
        with database.connect() as connection:
            connection.execute(text("SELECT 1"))
    assert pings == []
    monkeypatch.setattr(db.session, "PING_AFTER", 0.0)  # now every checkout is "idle"
    with database.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert len(pings) == 1


@postgres_only
def test_postgres_pool_recycles_and_reads_committed(db_url):
    engine = db.init_engine(db_url, pool_size=12, max_overflow=3)
    try:
        assert 0 < engine.pool._recycle <= 3600  # SQLAlchemy's own attribute: nothing else says it
        assert engine.pool.size() == 12
        with engine.connect() as connection:
            assert connection.get_isolation_level() == "READ COMMITTED"
    finally:
        db.dispose_engine()


@server_only
def test_a_pooled_connection_the_server_killed_is_replaced_at_its_idle_checkout(database, monkeypatch):
    name = database.dialect.name
    with database.connect() as connection:
        victim = connection.execute(own_connection_id_sql(name)).scalar()
    with create_engine(database.url, poolclass=NullPool).connect() as killer:
        killer.execute(kill_connection_sql(name, victim))
    monkeypatch.setattr(db.session, "PING_AFTER", 0.0)
    with database.connect() as connection:  # the ping finds it dead; the pool connects anew
        assert connection.execute(own_connection_id_sql(name)).scalar() != victim


def test_each_thread_gets_its_own_session_and_remove_releases_it(session):
    seen = {}

    def work():
        seen["session"] = db.Session()
        db.Session.execute(text("SELECT 1"))
        db.Session.remove()
        seen["after_remove"] = db.Session.registry.has()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert seen["session"] is not db.Session()
    assert seen["after_remove"] is False
    assert db.get_engine().pool.checkedout() == 0


def test_session_scope_rolls_back_on_error(session):
    from db.models import User
    from tests.conftest import count_rows

    with pytest.raises(RuntimeError):
        with db.session_scope() as s:
            s.add(User(name="x", age=1))
            s.flush()
            raise RuntimeError("stop")
    assert count_rows(User) == 0


def test_backend_name_matches_the_configured_database(db_url, database):
    assert database.dialect.name in ("sqlite", "mysql", "mariadb", "postgresql")
    assert backend(db_url) in ("sqlite", "mysql", "postgresql")
