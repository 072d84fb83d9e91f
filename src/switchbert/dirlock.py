"""One writer per directory: ``DirectoryLock`` holds ``fcntl.flock`` on ``DIR/.lock``.

The lock file records the holder's pid, host and start time, so a second writer stops with a message
naming the first. The kernel drops the lock when the process dies (kill -9 included), so a stale lock
file never blocks a later writer. flock is advisory and per host: on a network file system shared by
several hosts it may not exclude a writer on another host (NFS maps it to POSIX locks; some file
systems ignore it). flock locks belong to an open file, so one process that locks the same directory
twice is refused like a second process would be.

Used by the trainer (``train.rundir.RunLock``: one run per output directory), by the synthetic
benchmark's generator (one ``switchbert synth`` per data directory), by the demo (one per ``--out``)
and, waiting rather than refusing, around evaluation's read-merge-write of its result files.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

LOCK_NAME = ".lock"


class DirectoryLockedError(RuntimeError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive lock on a directory, as a context manager.

    Args:
        directory: the directory (created if missing).
        message: the refusal's text; ``{directory}`` and ``{holder}`` (pid, host, start time) are
            filled in. Subclasses set ``MESSAGE`` and ``ERROR`` instead.
        name: the lock file's name in ``directory``; another name is another, independent lock.
        wait: block until the holder releases the lock instead of refusing (for short critical
            sections such as merging result files, never for a whole run).
    """

    MESSAGE = ("{directory} is in use by another process ({holder}); wait for it to finish or choose "
               "another directory")
    ERROR: type[DirectoryLockedError] = DirectoryLockedError

    def __init__(self, directory: str | Path, message: Optional[str] = None, name: str = LOCK_NAME,
                 wait: bool = False) -> None:
        self.path = Path(directory) / name
        self.message = message or self.MESSAGE
        self.wait = wait
        self._fd: Optional[int] = None

    def acquire(self) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise self.ERROR(self.message.format(directory=self.path.parent, holder=holder)) from None
        os.ftruncate(fd, 0)
        info = f"pid {os.getpid()} on host {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.pwrite(fd, (info + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
