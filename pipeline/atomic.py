"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

Every JSON, text, NumPy and PNG artefact of the toolkit goes through :func:`write_bytes`
(or one of its wrappers); every folder that must appear complete (a checkpoint, a run's
``best/``) through :func:`replace_folder`. The data goes to a temporary name in the same
folder, is flushed and ``fsync``-ed, then renamed over the target (``os.replace``, atomic
on POSIX), and the folder entry is synced so the rename survives a power cut.

The temporary file is created with mode 0666 filtered by the process umask, as ``open()``
would create it (``tempfile.mkstemp`` makes 0600 files, which other users of a shared run
folder could not read).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_folder(folder: Path) -> None:
    """Persist a rename in ``folder`` (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); returns it.

    Parent folders are created. The file's mode is 0666 minus the umask (0644 under the
    usual 022), like any file the process creates with ``open()``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: a fresh name, never someone else's file; 0o666: the kernel applies the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return write_bytes(path, text.encode("utf-8"))


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively
    (JSON has no NaN; ``json.dumps`` would write the invalid token ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """The toolkit's JSON layout: indent 1, UTF-8 characters kept, a final newline; NaN and
    inf become null."""
    return json.dumps(finite_or_none(data), indent=1, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON (:func:`json_text`) atomically."""
    return write_text(path, json_text(data))


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Write NumPy arrays as an uncompressed ``.npz`` atomically (``np.savez`` layout)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


KILL_AT_ENV = "NCORE_KILL_AT"
"""Test hook: ``NCORE_KILL_AT=<place>:<point>`` makes this process SIGKILL itself at that
named point (:func:`kill_point`), e.g. ``replace_folder:built``, ``aside``, ``landed``, so
that a test can show what a kill there leaves behind with a real process and a real kill."""

_NEW = "new"  # ``.<name>.new-<pid>-<token>``: a folder being built
_OLD = "old"  # ``.<name>.old-<pid>-<token>``: the previous folder, moved aside for the swap


def kill_point(name: str) -> None:
    """SIGKILL this process here when ``NCORE_KILL_AT`` names this point (tests only)."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_point(point: str) -> None:
    kill_point(f"replace_folder:{point}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _siblings(folder: Path, role: str) -> list[tuple[Path, int]]:
    """The ``.<name>.<role>-<pid>-<token>`` folders beside ``folder``, with their pids."""
    prefix = f".{folder.name}.{role}-"
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid, _, token = entry.name[len(prefix) :].partition("-")
            if pid.isdigit() and token:
                found.append((entry, int(pid)))
    return sorted(found)


def _legacy_temporaries(folder: Path) -> list[Path]:
    """Temporaries of the earlier ``replace_folder`` (``tempfile.mkdtemp(prefix=".<name>.")``,
    eight random characters), which a kill left behind and nothing ever removed."""
    pattern = re.compile(re.escape(f".{folder.name}.") + r"[a-z0-9_]{8}")
    with contextlib.suppress(FileNotFoundError):
        return [
            p
            for p in folder.parent.iterdir()
            if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
        ]
    return []


def recover_folder(folder: str | os.PathLike[str]) -> None:
    """Undo what a killed :func:`replace_folder` of ``folder`` left (processes still alive are
    left alone): an old folder moved aside while the new one never landed is moved back; a
    moved-aside old folder whose replacement did land, and every unfinished new folder, are
    deleted. Only names of this module's own scheme beside ``folder`` are touched."""
    folder = Path(folder)
    for backup, pid in _siblings(folder, _OLD):
        if _pid_alive(pid):
            continue
        if not folder.exists() and not folder.is_symlink():
            os.rename(backup, folder)  # the new folder never landed: the old one comes back
            _fsync_folder(folder.parent)
        else:
            shutil.rmtree(backup, ignore_errors=True)
    for tmp, pid in _siblings(folder, _NEW):
        if not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in _legacy_temporaries(folder):
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def replace_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``folder`` when the block ends.

    ``with replace_folder(final) as tmp: ...write into tmp...``. On success an existing
    ``folder`` is renamed aside (``.<name>.old-<pid>-<token>``), ``tmp``
    (``.<name>.new-<pid>-<token>``) renamed to ``folder``, and only then the old one
    deleted; on any exception ``tmp`` is deleted and ``folder`` is left as it was. A kill at
    any point leaves the old folder or the new one complete under ``folder``, or the old one
    aside with the new one complete beside it; the next ``replace_folder`` of the same
    folder (or :func:`recover_folder`) first puts the old one back if the new one never
    landed and deletes every leftover. The folder and everything in it get the modes
    ``mkdir()`` and ``open()`` would give them (0777 / 0666 minus the umask), whatever
    wrote them.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    pid = os.getpid()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{_NEW}-{pid}-", dir=folder.parent))
    backup = folder.with_name(f".{folder.name}.{_OLD}-{pid}-{secrets.token_hex(4)}")
    try:
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        yield tmp
        for child in tmp.rglob("*"):
            # Some writers ignore the umask (safetensors creates its files 0600): every
            # entry gets the mode open() / mkdir() would have given it.
            if child.is_file() and not child.is_symlink():
                os.chmod(child, 0o666 & ~mask)
                _fsync_file(child)
            elif child.is_dir() and not child.is_symlink():
                os.chmod(child, 0o777 & ~mask)
        _fsync_folder(tmp)
        _kill_point("built")
        had_old = folder.exists() or folder.is_symlink()
        if had_old:
            os.rename(folder, backup)
            _kill_point("aside")
        try:
            os.rename(tmp, folder)
        except BaseException:
            if had_old:
                os.rename(backup, folder)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(folder.parent)
    _kill_point("landed")
    if had_old:
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup)
        else:
            backup.unlink()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def os_reason(error: OSError) -> str:
    """A short reason for a failed write or read: "the disk is full", "read-only file
    system", or the system's own words ("Permission denied", "File too large", ...)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if error.errno == errno.EROFS:
        return "read-only file system"
    return error.strerror or str(error)


def os_error_line(error: OSError, fallback: object = "") -> str:
    """One line for an OSError that a command cannot recover from: the path, then why."""
    where = error.filename if error.filename is not None else fallback
    if where:
        return f"{where}: {os_reason(error)}"
    return f"a file could not be written or read ({os_reason(error)})"


def probe_writable(folder: str | os.PathLike[str], prefix: str) -> None:
    """Write, flush to disk and remove a 4 KiB file named ``<prefix>*`` in ``folder``: an
    ``OSError`` now (full disk, read-only or forbidden folder) instead of after a long
    computation. A full disk fails the write, not the open, hence the bytes and the fsync."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=folder, prefix=prefix) as probe:
        probe.write(b"\0" * 4096)
        probe.flush()
        os.fsync(probe.fileno())
