"""Hardening (issue 13): a full disk while saving a manifest or an inspect export is one line,
and every reader of a manifest (perturb and training too) reports a wrong type in one line.

Before the fix these were tracebacks. "Disk full" is a real limit on file size
(``RLIMIT_FSIZE``: the write fails with EFBIG) set in a real child process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_hardening_manifest import WRONG_TYPES, _edit, _manifest

from pipeline.cli import main as prep_main
from pipeline.testing.corpus_trees import tone, wav_bytes

PREP = (sys.executable, "-m", "pipeline.cli")
TRAIN = (sys.executable, "-m", "trainer.cli")


def _limited(limit_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _one_line(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]


def _csv_corpus(root):
    root.mkdir()
    rows = ["path,emotion,speaker"]
    for i in range(40):
        (root / f"a{i:02d}.wav").write_bytes(wav_bytes(tone(0.3, 16000, 200.0 + 10 * i), 16000))
        rows.append(f"a{i:02d}.wav,{'happy' if i % 2 else 'sad'},spk{i % 4}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_full_disk_while_saving_a_manifest_is_one_line_and_keeps_the_old_one(tmp_path):
    data = _csv_corpus(tmp_path / "data")
    manifests = tmp_path / "m"
    cmd = [*PREP, "manifest", "--dataset", "csv", "--data-dir", str(data)]
    cmd += ["--manifest-dir", str(manifests)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    old = (manifests / "csv.json").read_bytes()
    full = subprocess.run(
        [*cmd, "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited(len(old) // 2),
    )
    line = _one_line(full)
    assert "csv.json" in line and "File too large" in line
    assert (manifests / "csv.json").read_bytes() == old
    assert sorted(p.name for p in manifests.iterdir()) == [".csv.json.lock", "csv.json"]


def test_a_full_disk_while_exporting_a_clip_is_one_line(tmp_path):
    data = _csv_corpus(tmp_path / "data")
    cmd = [*PREP, "manifest", "--dataset", "csv", "--data-dir", str(data)]
    subprocess.run([*cmd, "--manifest-dir", str(tmp_path / "m")], check=True, timeout=300)
    manifest = tmp_path / "m" / "csv.json"
    clip = json.loads(manifest.read_text())["clips"][0]["id"]
    full = subprocess.run(
        [*PREP, "inspect", str(manifest), "--clip", clip, "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited(4096),  # a 0.3 s WAV is 9.6 kB
    )
    assert "File too large" in _one_line(full)
    long = CliRunner().invoke(prep_main, ["inspect", str(manifest), "--clip", "c" * 235])
    assert long.exit_code == 1 and "characters long" in long.output
    assert long.output.count("\n") == 1


@pytest.mark.parametrize("case", ["view_sets null", "clip entry 5", "split a list"])
def test_perturb_and_training_report_a_wrongly_typed_manifest_in_one_line(tmp_path, case):
    path = _edit(_manifest(tmp_path), WRONG_TYPES[case])
    perturb = subprocess.run(
        [*PREP, "perturb", "--dataset", "demo", "--manifest-dir", str(path.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert str(path) in _one_line(perturb)
    train = subprocess.run(
        [*TRAIN, "--manifest", str(path), "--backbone", "tiny", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert str(path) in train.stderr.strip().splitlines()[-1]
