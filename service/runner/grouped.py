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
import threading

from db import session_scope
from service.runner import submit


class _Waiting:
    """One submit in line: its row, and then its Task or its error."""

    __slots__ = ("row", "task", "error", "leads", "woken")

    def __init__(self, row):
        self.row = row
        self.task = self.error = None
        self.leads = False  # it writes the next group
        self.woken = threading.Event()  # its task is written, or it leads


class Group:
    """This process's line of submits that commit together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._line = []  # _Waiting, in arrival order
        self._writing = False  # a group is being written; arrivals wait for the next one

    def enqueue(self, session, name, args, delay=None, run_at=None, max_attempts=None,
                time_limit=None, priority=None):
        """Queue a task and commit it (with whatever concurrent submits are waiting); return it.

        Checks the task against session (registry, arguments, backlog) first:
        UnknownTask, InvalidArguments or QueueFull leave nothing written. A
        database error while writing is raised here, and nothing of this task
        is written; another submit's bad row never fails this one.
        """
        spec, stored_args = submit.check_task(session, name, args)
        me = _Waiting(submit.task_row(spec, stored_args, delay, run_at, max_attempts, time_limit,
                                      priority=priority))
        with self._lock:
            self._line.append(me)
            me.leads = not self._writing
            self._writing = True
        if not me.leads:
            me.woken.wait()
        if me.leads:
            self._write_next_group()
        if me.error is not None:
            raise me.error
        return me.task

    def _write_next_group(self):
        """Write everyone in line, then wake them and the next leader."""
        with self._lock:
            group, self._line = self._line, []
        try:
            _write(group)
        finally:
            for waiting in group:
                if waiting.task is None and waiting.error is None:  # the writer was interrupted
                    waiting.error = RuntimeError("the task was not queued: its group's write stopped")
            with self._lock:
                if self._line:
                    self._line[0].leads = True
                    self._line[0].woken.set()
                else:
                    self._writing = False
            for waiting in group:
                waiting.woken.set()


def _write(group):
    """Insert the group's rows in one transaction; if that fails, each in one of its own."""
    try:
        with session_scope() as session:
            written = submit.add_rows(session, [waiting.row for waiting in group])
    except Exception as error:
        if len(group) == 1:
            group[0].error = error
            return
    else:
        for waiting, task in zip(group, written):
            waiting.task = task
        return
    for waiting in group:  # so that one row the database refuses fails only its own submit
        try:
            with session_scope() as session:
                waiting.task = submit.add_rows(session, [waiting.row])[0]
        except Exception as error:
            waiting.error = error


group = Group()  # this process's


def enqueue_alone(session, name, args, **options):
    """Queue a task in a transaction of its own (shared with concurrent ones); return it, committed."""
    return group.enqueue(session, name, args, **options)
