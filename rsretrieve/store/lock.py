"""``write.lock``: one writer per index folder, held with ``flock`` (the kernel drops it when the writer dies)."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from rsretrieve.store.errors import StoreError

LOCK = "write.lock"
log = logging.getLogger(__name__)


class WriteLock:
    """An exclusive ``flock`` on ``write.lock``, which holds the writer's pid.

    The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left behind is
    recognised as stale for certain, even when its pid has been reused since.
    """

    def __init__(self, db: Path):
        self.path = db / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StoreError naming the process that holds it (OSError if not writable)."""
        fd = self._locked_fd()
        try:
            previous = os.read(fd, 64).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        if previous:
            log.warning("taking over a stale lock left by process %s", previous)
        self._fd = fd

    def check_free(self) -> None:
        """Raise StoreError now if a live writer holds the lock (a cheap early check; ``acquire`` decides)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None
        finally:
            os.close(fd)

    def _locked_fd(self) -> int:
        """An open, flock-ed descriptor of the lock file that is still the one at ``self.path``."""
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            if self._is_current(fd):
                return fd
            os.close(fd)  # the holder removed the file between our open and flock: try again

    def _busy(self) -> StoreError:
        try:
            owner = self.path.read_text().strip() or "unknown"
        except OSError:
            owner = "unknown"
        return StoreError(f"{self.path.parent} is being written by another indexer (pid {owner}); let it finish")

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == self.path.stat().st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock if this object holds it."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
