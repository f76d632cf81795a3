"""SQLite writers take turns on a lock file instead of sleeping in SQLite's busy handler.

SQLite lets one transaction write at a time. A writer that finds the database
locked sleeps in its busy handler (1, 2, 5, 10 ... 100 ms) and looks again, so
under contention the lock often sits free while every waiter sleeps, which
sets the p99 and wastes throughput (docs/performance.md).
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
import time

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")  # REPLACE; an UPSERT starts with INSERT
PASS_FOR = 0.002  # seconds a process may pass the turn between its own threads while others wait


class ProcessTurn:
    """This process's side of the write turn on one lock file.

    Its threads queue on a lock; the one at the front holds the file lock.
    When it is done and another thread of this process already waits, the
    file lock passes straight on, for up to PASS_FOR seconds after this
    process took it: a process whose writers come in a stream (a task
    process: one short transaction per task) then writes several of them for
    each turn another process takes (a web process commits its submits in
    groups: service.runner.group_commit), instead of one. Passing on for longer
    starves the web process.
    """

    def __init__(self, path, lock=None):
        """lock: what its threads queue on (a threading.Lock; a test may pass one it steers)."""
        self.path = path
        self._lock = threading.Lock() if lock is None else lock  # held by the thread whose turn it is
        self._guard = threading.Lock()  # over the counts, and over a give against a waiter leaving
        self._waiting = 0  # threads of this process waiting in take()
        self._locked_at = 0.0  # time.monotonic() when this process took the file lock
        self._fd = None  # opened at the first turn: an engine without the turn makes no file
        self._file_locked = False

    @property
    def waiting(self):
        """How many threads of this process wait for the turn now."""
        return self._waiting

    def take(self, timeout):
        """Wait for the turn; sqlite3.OperationalError after timeout seconds."""
        with self._guard:
            self._waiting += 1
        got = False
        try:
            got = self._lock.acquire(timeout=timeout)
        finally:  # interrupted too: a count left too high would pass turns to nobody
            with self._guard:
                self._waiting -= 1
                if not got:
                    self._let_go_if_unwanted()
        if not got:
            raise sqlite3.OperationalError(f"database is locked (no write turn within {timeout:g}s)")
        if self._file_locked:  # passed on by another thread of this process
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # Only the thread at the front of this process waits here (flock has no timeout).
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._file_locked, self._locked_at = True, time.monotonic()

    def give(self):
        """End this thread's turn: pass it on within the process, or free the file lock."""
        with self._guard:
            try:
                if not self._waiting or time.monotonic() - self._locked_at >= PASS_FOR:
                    self._unlock_file()
            finally:
                self._lock.release()

    def _let_go_if_unwanted(self):
        # A waiter gave up: a turn passed on to it with nobody left to take it must not
        # keep the file locked. (Under _guard, so no give() decides in between.)
        if not self._waiting and self._lock.acquire(blocking=False):
            try:
                self._unlock_file()
            finally:
                self._lock.release()

    def _unlock_file(self):
        if self._file_locked:
            self._file_locked = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def forget(self):
        """In a forked child: drop the parent's file (its lock stays the parent's)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._file_locked = None, False


_process_turns = {}  # lock file path -> this process's ProcessTurn
_process_turns_guard = threading.Lock()


def process_turn(path):
    """This process's turn on the lock file path (one per database file)."""
    with _process_turns_guard:
        turn = _process_turns.get(path)
        if turn is None:
            turn = _process_turns[path] = ProcessTurn(path)
        return turn


def _forget_process_turns():
    # A forked child starts with no turn held (a parent thread may have held one).
    global _process_turns_guard
    for turn in _process_turns.values():
        turn.forget()
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
        self._turn = None  # the ProcessTurn held, looked up at each take: a fork makes new ones
        self._turn_held = False

    def take_turn(self):
        """Wait for the write turn (no-op if held); sqlite3.OperationalError after the busy timeout."""
        if not self._turn_held:
            self._turn = process_turn(self._turn_path)
            self._turn.take(self._turn_wait)
            self._turn_held = True

    def give_turn(self):
        """Let the next writer go (no-op if not held)."""
        if self._turn_held:
            self._turn_held = False
            self._turn.give()

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
