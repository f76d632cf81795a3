"""Which failures are worth another attempt, and how long to wait before it."""
import random

from sqlalchemy.exc import DBAPIError

# MySQL/MariaDB error codes for lost connections, deadlocks and lock waits.
MYSQL_TRANSIENT_CODES = {
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
}
SQLITE_TRANSIENT_WORDS = (
    "database is locked",
    "database table is locked",
    "busy",
    "unable to open database file",
)


def is_transient(error):
    """True for database errors that another attempt may not hit."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    code = orig.args[0] if getattr(orig, "args", None) else None
    if isinstance(code, int) and code in MYSQL_TRANSIENT_CODES:
        return True
    text = str(orig).lower()
    return any(word in text for word in SQLITE_TRANSIENT_WORDS)


def backoff_seconds(attempt, base, cap):
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
