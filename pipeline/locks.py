"""Exclusive locks held for the length of a command: one manifest writer, one run per folder.

A lock is an ``flock`` on a small file (``.<name>.lock`` beside what it guards). The kernel
releases it when its process dies, SIGKILL included, so a killed command never blocks the
next one, and there is no stale lock to clean up. The holder writes a line saying who it
is, so that a refused command can name it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError


class LockHeld(PipelineError):
    """The lock is held by another process; ``holder`` says which (its own line)."""

    def __init__(self, lock_path: Path, holder: str) -> None:
        super().__init__(f"{lock_path}: held by {holder}")
        self.lock_path = lock_path
        self.holder = holder


@contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str], holder: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``lock_path`` while the block runs.

    Raises :class:`LockHeld` at once when another process holds it, and ``OSError`` when
    the lock file cannot be created (a read-only folder).
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(lock_path, handle.read().strip() or "another process") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{holder} (pid {os.getpid()})\n")
            handle.flush()
        except OSError:
            pass  # the lock holds; only the description of its holder is missing
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
