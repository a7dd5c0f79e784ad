"""pipeline/atomic.py: a folder replaced by ``replace_folder`` is the old one or the new one,
whatever point a kill hits, and the next run leaves no orphan; files and folders written
atomically get the modes ``open()`` and ``mkdir()`` would give them under the umask."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.atomic import KILL_AT_ENV, recover_folder, replace_folder, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]

OLD = {"a.txt": "old a", "sub/b.txt": "old b"}
NEW = {"a.txt": "new a", "c.txt": "new c", "sub/d.txt": "new d"}

# A real process builds the new folder and is SIGKILLed at one named point of the swap.
CHILD = """
import sys
from pathlib import Path
from pipeline.atomic import replace_folder
files = {"a.txt": "new a", "c.txt": "new c", "sub/d.txt": "new d"}
with replace_folder(Path(sys.argv[1])) as tmp:
    for name, text in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
"""


def _contents(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write(folder: Path, files: dict[str, str]) -> None:
    with replace_folder(folder) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def _killed_child(folder: Path, point: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)],
        env={**os.environ, "PYTHONPATH": str(ROOT), KILL_AT_ENV: f"replace_folder:{point}"},
    )
    return done.returncode


# ``aside`` exists only when there is an old folder to move aside.
@pytest.mark.parametrize(
    ("point", "had_old"),
    [("built", True), ("aside", True), ("landed", True), ("built", False), ("landed", False)],
)
def test_a_kill_at_any_point_leaves_old_or_new_and_no_orphan_after_the_next_run(
    tmp_path, point, had_old
) -> None:
    folder = tmp_path / "best"
    (tmp_path / "NOTES.md").write_text("the user's")
    if had_old:
        _write(folder, OLD)
    assert _killed_child(folder, point) == -signal.SIGKILL
    # Right after the kill: the complete old or new folder, or (only between the two
    # renames) the old one moved aside with the complete new one beside it.
    if folder.exists():
        assert _contents(folder) in ([OLD, NEW] if had_old else [NEW])
    else:
        assert point in ("aside", "built")
    # The next run of anything that replaces the folder puts things right first.
    recover_folder(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["NOTES.md", "best"] if had_old or point == "landed" else ["NOTES.md"]
    )
    if folder.exists():
        expected = NEW if point == "landed" else OLD
        assert _contents(folder) == expected
    _write(folder, NEW)
    assert _contents(folder) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["NOTES.md", "best"]


def test_the_next_replace_removes_a_temporary_of_the_old_scheme(tmp_path) -> None:
    folder = tmp_path / "page"
    _write(folder, OLD)
    orphan = tmp_path / ".page.k3x_9q2z"  # tempfile.mkdtemp(prefix=".page.") of a killed run
    (orphan / "big.bin").parent.mkdir(parents=True)
    (orphan / "big.bin").write_bytes(b"x" * 1000)
    unrelated = tmp_path / ".pages.k3x_9q2z"  # another folder's name: not ours to delete
    unrelated.mkdir()
    _write(folder, NEW)
    assert not orphan.exists()
    assert unrelated.exists()
    assert _contents(folder) == NEW


def test_a_live_process_temporary_is_left_alone(tmp_path) -> None:
    folder = tmp_path / "best"
    _write(folder, OLD)
    building = tmp_path / f".best.new-{os.getpid()}-abcd1234"  # this process: alive
    building.mkdir()
    recover_folder(folder)
    assert building.exists()


# ----- files and folders: their modes and what a failure leaves ------------------------------
def _mode_under_umask(mask: int, tmp_path: Path) -> tuple[int, int, int]:
    """Modes of a file written by write_text, a folder by replace_folder and a file inside
    it written private (0600, as safetensors writes weights), in a child process whose umask
    is ``mask`` (the umask is per process)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pipeline.atomic import replace_folder, write_text\n"
        f"os.umask({mask})\n"
        "root = Path(sys.argv[1])\n"
        "write_text(root / 'a.json', '{}')\n"
        "with replace_folder(root / 'best') as tmp:\n"
        "    fd = os.open(tmp / 'inner.bin', os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "    os.write(fd, b'x')\n"
        "    os.close(fd)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return tuple(
        stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "a.json", tmp_path / "best", tmp_path / "best" / "inner.bin")
    )


@pytest.mark.parametrize(
    ("mask", "expected"),
    [(0o022, (0o644, 0o755)), (0o002, (0o664, 0o775)), (0o077, (0o600, 0o700))],
)
def test_atomic_writes_respect_the_umask(tmp_path, mask, expected) -> None:
    file_mode, folder_mode, inner_mode = _mode_under_umask(mask, tmp_path)
    assert file_mode == expected[0]  # as open() would create it (mkstemp makes 0600)
    assert folder_mode == expected[1]  # as mkdir would (mkdtemp makes 0700)
    assert inner_mode == expected[0]  # widened to the umask's mode, as a shared run needs


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_on_failure(tmp_path) -> None:
    target = tmp_path / "x.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    folder = tmp_path / "best"
    with replace_folder(folder) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), replace_folder(folder) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("killed while saving")
    assert (folder / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "x.txt"]
    write_json(tmp_path / "nan.json", {"x": float("nan"), "y": [1.5, float("inf")]})
    assert json.loads((tmp_path / "nan.json").read_text()) == {"x": None, "y": [1.5, None]}
