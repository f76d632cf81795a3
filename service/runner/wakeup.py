"""Wake-ups between the processes of one server: web processes tell task processes of new tasks.

A task process binds a datagram socket at a path its server gives it and wakes
its executor on each datagram; a web process sends one datagram to every task
process's path after each commit that queued tasks. Without it a task process
would find tasks only when it polls (TASK_POLL_INTERVAL). A lost datagram costs
nothing but that wait: the poll still finds every task.
"""
import os
import socket
import threading


class Listener:
    """A task process's socket: calls wake() for every datagram (a daemon thread)."""

    def __init__(self, path, wake):
        self.path = path
        if os.path.exists(path):  # left by the process whose role this one took over
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._wake = wake
        threading.Thread(target=self._listen, name="task-wakeup", daemon=True).start()

    def _listen(self):
        while True:
            try:
                self._sock.recv(64)
            except OSError:  # closed
                return
            self._wake()


class Announcer:
    """A web process's side: after a commit that queued tasks, wake every task process."""

    def __init__(self, paths):
        self.paths = list(paths)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def __call__(self, added):
        for path in self.paths:
            try:
                self._sock.sendto(b"!", path)
            except OSError:  # gone, or its queue is full (it is awake then): it polls anyway
                pass
