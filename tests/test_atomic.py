"""pipeline/atomic.py: a folder replaced by ``replace_folder`` is the old one or the new one,
whatever point a kill hits, and the next run leaves no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.atomic import KILL_AT_ENV, recover_folder, replace_folder

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
