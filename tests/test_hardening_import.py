"""Hardening (issue 13): hostile corpora become recorded failures or one line, never a hang.

Each test reproduces a failure of the code before the fix: a file listed twice imported
twice, a duplicated CSV column silently used, NUL / '.' paths and symlink loops crashing
the import, a FIFO blocking it for ever, a float WAV stored hard-clipped without a word.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import AudioError, read_source
from pipeline.datasets import DatasetError, build_manifest
from pipeline.manifest import Manifest
from pipeline.testing.corpus_trees import tone, wav_bytes

PREP = (sys.executable, "-m", "pipeline.cli")


def _corpus(root, rows, files=6):
    """WAVs a0..a5 (labels by index) and labels.csv listing them, then the extra ``rows``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,emotion,speaker"]
    for i in range(files):
        (root / f"a{i}.wav").write_bytes(wav_bytes(tone(0.2, 16000, 200.0 + 40 * i), 16000))
        lines.append(f"a{i}.wav,{'happy' if i % 2 else 'sad'},spk{i % 3}")
    lines += rows
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _by_path(manifest):
    return {f.path: f.reason for f in manifest.failures}


def test_a_file_listed_twice_becomes_a_duplicate_failure(tmp_path):
    # a1 again with other labels (contradiction: every listing refused); a2 again under
    # another spelling with the same labels (the first listing kept).
    root = _corpus(tmp_path / "c", ["a1.wav,sad,spk0", "sub/../a2.wav,sad,spk2"])
    (root / "sub").mkdir()
    manifest, summary = build_manifest("csv", root, "c", seed=0)
    assert summary.found == summary.imported + summary.failed == 8
    paths = [c.path for c in manifest.clips]
    assert "a1.wav" not in paths  # neither label of a1 can be trusted
    assert paths.count("a2.wav") == 1 and "sub/../a2.wav" not in paths
    reasons = [f.reason for f in manifest.failures]
    assert sum(r.startswith("duplicate:") for r in reasons) == 3, reasons
    assert _by_path(manifest)["sub/../a2.wav"].startswith("duplicate: sub/../a2.wav is the same")
    assert sorted(paths) == ["a0.wav", "a2.wav", "a3.wav", "a4.wav", "a5.wav"]


def test_a_duplicated_csv_column_is_refused_in_one_line(tmp_path):
    root = _corpus(tmp_path / "c", [])
    text = (root / "labels.csv").read_text().splitlines()
    text = [text[0] + ",emotion"] + [line + ",other" for line in text[1:]]
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match="column 'emotion' appears more than once"):
        build_manifest("csv", root, "c", seed=0)
    result = subprocess.run(
        [
            *PREP,
            "manifest",
            "--dataset",
            "csv",
            "--data-dir",
            str(root),
            "--manifest-dir",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "appears more than once" in result.stderr


def test_nul_dot_and_looping_paths_are_one_failure_each(tmp_path):
    root = _corpus(tmp_path / "c", ["a\x00b.wav,sad,spk0", ".,sad,spk1", "loop.wav,sad,spk2"])
    (root / "loop.wav").symlink_to("loop.wav")
    manifest, summary = build_manifest("csv", root, "c", seed=0)
    assert summary.imported == 6 and summary.failed == 3
    reasons = _by_path(manifest)
    assert reasons["a\x00b.wav"].startswith("bad path") and "NUL" in reasons["a\x00b.wav"]
    assert reasons["."].startswith("bad path")
    assert reasons["loop.wav"].startswith("symlink loop")


def test_a_symlink_loop_found_by_listing_the_folder_is_one_failure(tmp_path):
    from pipeline.testing.corpus_trees import make_vivae

    root = make_vivae(tmp_path / "VIVAE", ["S01_anger_low_01.wav", "S02_fear_peak_02.wav"])
    loop = root / "full_set" / "S03_pain_strong_03.wav"
    loop.symlink_to(loop.name)
    manifest, summary = build_manifest("vivae", root, "v", seed=0)
    assert summary.imported == 2 and summary.failed == 1
    assert manifest.failures[0].reason.startswith("symlink loop")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    root = _corpus(tmp_path / "c", ["p.wav,sad,spk0"])
    os.mkfifo(root / "p.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        read_source(root / "p.wav")
    # The whole import in a real process: it must finish (the old code blocked for ever).
    result = subprocess.run(
        [
            *PREP,
            "manifest",
            "--dataset",
            "csv",
            "--data-dir",
            str(root),
            "--manifest-dir",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    manifest = Manifest.load(tmp_path / "m" / "csv.json")
    assert _by_path(manifest)["p.wav"].startswith("not a regular file")
    assert len(manifest.clips) == 6


@pytest.mark.parametrize(("peak", "refused"), [(4.03, True), (1.2, True), (0.95, False)])
def test_float_wav_beyond_full_scale_is_a_recorded_failure(tmp_path, peak, refused):
    root = _corpus(tmp_path / "c", ["loud.wav,sad,spk0"])
    t = np.arange(8000) / 16000
    sf.write(root / "loud.wav", peak * np.sin(2 * np.pi * 220 * t), 16000, subtype="FLOAT")
    manifest, _ = build_manifest("csv", root, "c", seed=0)
    reasons = _by_path(manifest)
    if refused:
        assert reasons["loud.wav"].startswith("out-of-range samples")
        assert f"{peak:.3g}" in reasons["loud.wav"]
    else:
        assert "loud.wav" not in reasons and "loud.wav" in [c.path for c in manifest.clips]
