"""Submits that need a transaction of their own commit together.

A request that only queues a task (the article's routes, POST /api/tasks
without an Idempotency-Key) has nothing to share its transaction with, so
concurrent ones in this process share one: the first writes the rows of all
that are waiting in one transaction, then hands the lead to the next waiter.
A group is whatever arrived while the previous one wrote, so a lone submit
waits for nobody, and under load one commit (on SQLite one write turn, on
MySQL one log flush) serves many. Code that submits inside its own transaction
keeps using submit.enqueue: its task commits with its writes, as before.
"""
import os
import threading

from sqlalchemy.exc import DBAPIError

from db.session import session_factory
from db.dialects import is_transient
from service.runner import submit, task_rows


class _Waiting:
    """One submit in line: its row, and then its Task or its error."""

    __slots__ = ("row", "task", "error", "leads", "woken")

    def __init__(self, row, woken):
        self.row = row
        self.task = self.error = None
        self.leads = False  # it writes the next group
        self.woken = woken  # set when its task is written, or when it leads


class Group:
    """This process's line of submits that commit together."""

    def __init__(self, wake_event=threading.Event):
        """wake_event: the Event class a submit in line sleeps on (a test may pass its own)."""
        self._wake_event = wake_event
        self._lock = threading.Lock()
        self._line = []  # _Waiting, in arrival order
        self._writing = False  # a group is being written; arrivals wait for the next one

    @property
    def waiting(self):
        """How many submits are in line for the next group (not yet being written)."""
        return len(self._line)

    def enqueue_and_commit(self, session, name, args, delay=None, run_at=None, max_attempts=None,
                time_limit=None, priority=None):
        """Queue a task and commit it (with whatever concurrent submits are waiting); return it.

        Checks the task against session (registry, arguments, backlog) first:
        UnknownTask, InvalidArguments or QueueFull leave nothing written. A
        database error while writing is raised here, and nothing of this task
        is written; another submit's bad row never fails this one.
        """
        spec, stored_args = submit.check_task(session, name, args)
        me = _Waiting(task_rows.task_row(spec, stored_args, delay, run_at, max_attempts, time_limit,
                                      priority=priority), self._wake_event())
        with self._lock:
            self._line.append(me)
            me.leads = not self._writing
            self._writing = True
        try:
            if not me.leads:
                me.woken.wait()
            if me.leads:
                self._write_next_group()
        except BaseException:
            self._leave(me)
            raise
        if me.error is not None:
            raise me.error
        return me.task

    def _leave(self, me):
        """An interrupted submit: out of the line, and the lead it was handed goes on."""
        with self._lock:
            if me not in self._line:
                return  # a leader has its row, or it was writing (which hands the lead on)
            self._line.remove(me)
            if me.leads:
                self._hand_on()

    def _hand_on(self):
        # Under _lock: the next in line leads, or nobody writes.
        if self._line:
            self._line[0].leads = True
            self._line[0].woken.set()
        else:
            self._writing = False

    def _write_next_group(self):
        """Write everyone in line, then wake them and the next leader."""
        with self._lock:
            group, self._line = self._line, []
        try:
            _write(group)
        finally:
            for waiting in group:
                if waiting.task is None and waiting.error is None:  # the writer was interrupted
                    waiting.error = RuntimeError(
                        "the write of this task's group was interrupted; it may not be queued")
            with self._lock:
                self._hand_on()
            for waiting in group:
                waiting.woken.set()


def _write(group):
    """Insert the group's rows in one transaction; rows the database refuses, each in one of its own.

    Only a refused INSERT is tried again row by row (nothing was committed then).
    An error at the commit reaches every submit of the group: the commit may
    have happened, and writing the rows again could queue them twice. So does
    a transient one (locked, connection lost): one more try each would only
    wait for it again.
    """
    try:
        written = _insert([waiting.row for waiting in group])
    except _Refused as refused:
        if len(group) == 1:
            group[0].error = refused.error
        else:  # so that one row the database refuses fails only its own submit
            for waiting in group:
                _write([waiting])
        return
    except Exception as error:
        for waiting in group:
            waiting.error = error
        return
    for waiting, task in zip(group, written):
        waiting.task = task


class _Refused(Exception):
    """The database refused the INSERT itself; nothing was committed."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _insert(rows):
    """Insert and commit rows in a session of their own; return their Tasks."""
    session = session_factory()
    try:
        try:
            written = task_rows.insert_rows(session, rows)
        except DBAPIError as error:
            if is_transient(error):
                raise
            raise _Refused(error) from error
        session.commit()
        return written
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


group = Group()  # this process's


def _forget_group():
    # A forked child starts with an empty line (a parent thread may have been writing).
    global group
    group = Group()


os.register_at_fork(after_in_child=_forget_group)


def enqueue_and_commit(session, name, args, **options):
    """Queue a task in a transaction of its own (shared with concurrent ones); return it, committed."""
    return group.enqueue_and_commit(session, name, args, **options)
