"""What each database does differently, in one place: a class per database.

As huey keeps each storage's differences in its own class, each Dialect says
which drivers serve it, how it takes rows, which hints its statements need,
which errors are worth another attempt, how its engine is set up and which
indexes it makes. Everything else asks `dialect_of(session)` or
`dialect_for_url(url)` instead of testing a name: adding a database is adding
a class here.
"""
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from db.dialects.base import MIGRATION_LOCK_TIMEOUT, Dialect, MigrationLockTimeout, Taking
from db.dialects.mysql import MySQL
from db.dialects.postgresql import PostgreSQL
from db.dialects.sqlite import SQLite

__all__ = ["MIGRATION_LOCK_TIMEOUT", "Dialect", "MigrationLockTimeout", "Taking", "by_primary_key", "column_type",
           "dialect_for_url", "dialect_named", "dialect_of", "is_transient", "preferred_drivers", "supported_drivers",
           "with_partial_indexes", "partial_where", "only_where"]

_EACH = (SQLite(), MySQL(), PostgreSQL())
DIALECTS = {backend: dialect for dialect in _EACH for backend in dialect.backends}
DEFAULT = Dialect()


def dialect_named(name):
    """The Dialect for a SQLAlchemy dialect or backend name."""
    return DIALECTS.get(name, DEFAULT)


def dialect_of(session_or_bind):
    """The Dialect of what a Session, Connection or Engine talks to."""
    bind = session_or_bind.get_bind() if hasattr(session_or_bind, "get_bind") else session_or_bind
    return dialect_named(bind.dialect.name)


def dialect_for_url(url):
    """The Dialect of a database URL (a string or a SQLAlchemy URL)."""
    return dialect_named(make_url(url).get_backend_name())


def supported_drivers():
    """Every dialect+driver name the service runs on, in the order the classes list them."""
    return tuple(driver for dialect in _EACH for driver in dialect.drivers)


def preferred_drivers():
    """Each database's first driver name: the one to suggest."""
    return tuple(dialect.drivers[0] for dialect in _EACH)


def by_primary_key(statement):
    """Hint an UPDATE that names its rows by id to find them through the primary key, on
    each database that needs telling."""
    for dialect in _EACH:
        if dialect.primary_key_hint:
            hint, names = dialect.primary_key_hint
            for name in names:
                statement = statement.with_hint(hint, dialect_name=name)
    return statement


def column_type(generic, role):
    """The column type generic, as each database that has its own type for role stores it
    (Dialect.column_types)."""
    for dialect in _EACH:
        if role in dialect.column_types:
            generic = generic.with_variant(dialect.column_types[role], *dialect.backends)
    return generic


def partial_where(condition):
    """An Index's keyword arguments that make it partial (WHERE condition) where a database
    can; elsewhere it holds every row."""
    return {f"{dialect.name}_where": condition for dialect in _EACH if dialect.partial_indexes}


def with_partial_indexes(index):
    """index, made only on databases with partial indexes (elsewhere another index serves)."""
    return only_where(index, lambda dialect: dialect.partial_indexes)


def only_where(index, wanted):
    """index, made only on the databases whose Dialect is wanted(dialect); info tells alembic's
    comparison (alembic/env.py) so."""
    names = tuple(dialect.name for dialect in _EACH if wanted(dialect))
    index.info["dialects"] = names
    return index.ddl_if(callable_=lambda ddl, target, bind, **kw: kw["dialect"].name in names)


def is_transient(error):
    """True for database errors that another attempt may not hit (on any database)."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    code = orig.args[0] if getattr(orig, "args", None) else None
    if isinstance(code, int) and any(code in d.transient_codes for d in _EACH):
        return True
    state = getattr(orig, "sqlstate", None)
    if state and any(state in d.transient_states or state[:2] in d.transient_state_classes for d in _EACH):
        return True
    text = str(orig).lower()
    return any(word in text for d in _EACH for word in d.transient_words)
