"""The exclusive lock of a run directory: one process writes a run at a time, and a second one is
refused in one line naming the holder's pid. An flock on `.lock`, so a killed holder frees it."""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Optional

from tf_lottery.files import refuse_link


class RunLockedError(ValueError):
    """Another process is writing the run directory."""


class RunLock:
    """The lock of the run at `path` (`path`/.lock), taken at most once by this process."""

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = None

    def lock(self) -> None:
        """Take the run's exclusive lock, or refuse naming the process that holds it."""
        if self._fd is not None:
            return
        path = os.path.join(self.path, ".lock")
        refuse_link(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"output_dir {self.path!r} is not writable ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(
                    f"output_dir {self.path!r} is being written by another process (pid {holder}); "
                    "wait for it to finish or stop it, then rerun to resume"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
