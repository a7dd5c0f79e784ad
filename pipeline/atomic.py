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
import secrets
import shutil
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


@contextlib.contextmanager
def replace_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``folder`` when the block ends.

        ``with replace_folder(final) as tmp: ...write into tmp...``. On success an existing
        ``folder`` is removed and ``tmp`` renamed to it; on any exception ``tmp`` is deleted and
        ``folder`` is left as it was. The folder and everything in it get the modes ``mkdir()``
    and ``open()`` would give them (0777 / 0666 minus the umask), whatever wrote them.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
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
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(folder.parent)


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
