"""SQLite writers take turns on a lock file instead of sleeping in SQLite's busy handler.

SQLite lets one transaction write at a time. A writer that finds the database
locked sleeps in its busy handler (1, 2, 5, 10 ... 100 ms) and looks again, so
under contention the lock often sits free while every waiter sleeps: measured
with the article's route, that was the SQLite p99 and a third of its throughput.
Here a connection takes its turn before its transaction's first write and gives
it back at commit or rollback. Threads of one process queue on a lock (bounded
by the busy timeout); the one at the front holds an exclusive flock on
`<database>-turn`, which the kernel hands to the next process the moment it is
free and drops if a process dies. SQLite's own locking still decides what is
safe; the turn only decides who waits where, so a writer that takes no turn
(another program, a raw script) is merely slower.
"""
import fcntl
import os
import sqlite3
import threading

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")  # REPLACE; an UPSERT starts with INSERT

_process_turns = {}  # lock file path -> this process's turn lock
_process_turns_guard = threading.Lock()


def _process_turn(path):
    """This process's lock for the write turn on path (one per database file)."""
    with _process_turns_guard:
        return _process_turns.setdefault(path, threading.Lock())


def _forget_process_turns():
    # A forked child starts with no turn held (a parent thread may have held one).
    global _process_turns_guard
    _process_turns.clear()
    _process_turns_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_process_turns)


def turn_path(database):
    """The lock file beside a SQLite database file."""
    return f"{os.path.abspath(database)}-turn"


class TurnConnection(sqlite3.Connection):
    """A sqlite3 connection that holds the write turn from its first write to commit or rollback.

    sqlite3.connect(..., factory=functools.partial(TurnConnection, turn=path)).
    """

    def __init__(self, *args, turn, **kwargs):
        super().__init__(*args, **kwargs)
        self._turn_wait = kwargs.get("timeout", 5.0)  # sqlite3's busy timeout, in seconds
        self._turn_path = turn
        self._turn_lock = _process_turn(turn)
        self._turn_fd = None  # opened at the first turn: an engine without the turn makes no file
        self._turn_held = False

    def take_turn(self):
        """Wait for the write turn (no-op if held); sqlite3.OperationalError after the busy timeout."""
        if self._turn_held:
            return
        if not self._turn_lock.acquire(timeout=self._turn_wait):
            raise sqlite3.OperationalError(
                f"database is locked (no write turn within {self._turn_wait:g}s)")
        try:
            if self._turn_fd is None:
                self._turn_fd = os.open(self._turn_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # First in this process: wait for other processes' writers (no timeout
            # exists for flock; only this one thread per process waits here).
            fcntl.flock(self._turn_fd, fcntl.LOCK_EX)
        except BaseException:
            self._turn_lock.release()
            raise
        self._turn_held = True

    def give_turn(self):
        """Let the next writer go (no-op if not held)."""
        if not self._turn_held:
            return
        self._turn_held = False
        try:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)
        finally:
            self._turn_lock.release()

    def commit(self):
        try:
            super().commit()
        finally:
            self.give_turn()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self.give_turn()

    def close(self):
        try:
            super().close()
        finally:
            self.give_turn()
            if self._turn_fd is not None:
                os.close(self._turn_fd)
                self._turn_fd = None


def take_turn_before_writes(conn, cursor, statement, parameters, context, executemany):
    """before_cursor_execute: a write waits for its connection's turn first."""
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        writes = True
    else:  # text() and DDL carry no flags: look at the statement itself
        writes = statement.lstrip()[:6].upper() in WRITES
    if writes:
        take = getattr(conn.connection.dbapi_connection, "take_turn", None)
        if take is not None:
            take()
