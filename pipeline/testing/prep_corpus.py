"""A tiny corpus for the perturbation-stage tests, with two clips that must fail.

The corpus is the synthetic generator's (real 16 kHz WAV files) at short durations, imported
through the CSV importer into ``<root>/manifests/tiny.json``. Two clips are broken on
purpose: one too short for WORLD (imports fine, perturbation rejects it) and one whose file
is deleted after the import (decoding fails in the worker).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np

from pipeline.audio import write_wav
from pipeline.datasets import build_manifest
from pipeline.datasets.synthetic import SyntheticConfig, generate
from pipeline.manifest import Manifest

NAME = "tiny"
SHORT_ID = "wav__short"  # 200 samples: below WORLD's minimum, rejected by perturbation
GONE_ID = "wav__spk02_anger_002"  # deleted after the import: cannot be decoded
CLIPS = 12  # generated clips, plus the short one


def _config(clips: int) -> SyntheticConfig:
    return SyntheticConfig(
        speakers=2, emotions=2, clips=clips, min_duration=0.25, max_duration=0.4, seed=3
    )


def gone_path(manifest_path: Path) -> Path:
    """Where the file of :data:`GONE_ID` belongs (deleted by :func:`make_corpus`)."""
    return manifest_path.parents[1] / "data" / "wav" / f"{GONE_ID.removeprefix('wav__')}.wav"


def restore_gone(manifest_path: Path, clips: int = CLIPS) -> Path:
    """Put back the file of :data:`GONE_ID` with the bytes it was imported with (the
    generator is seeded, so it is written again identically); returns its path."""
    import tempfile

    target = gone_path(manifest_path)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), _config(clips))
        shutil.copyfile(Path(tmp) / "wav" / target.name, target)
    return target


def make_corpus(root: Path, clips: int = CLIPS) -> Path:
    """Write the corpus and its manifest under ``root``; returns the manifest path."""
    data = root / "data"
    config = _config(clips)
    labels = generate(data, config)
    rng = np.random.default_rng(0)
    write_wav(data / "wav" / "short.wav", 0.1 * rng.standard_normal(200))
    with open(labels, "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(("wav/short.wav", "achievement", "spk01"))
    path = root / "manifests" / f"{NAME}.json"
    manifest, _ = build_manifest("csv", data, NAME, seed=1, manifest_path=path)
    manifest.save(path)
    assert GONE_ID in manifest.clip_by_id() and SHORT_ID in manifest.clip_by_id()
    (data / "wav" / f"{GONE_ID.removeprefix('wav__')}.wav").unlink()
    return path


def copy_project(src_root: Path, dst_root: Path) -> Path:
    """Copy a corpus root (data + manifests, not the cache) and return the new manifest."""
    shutil.copytree(src_root / "data", dst_root / "data")
    shutil.copytree(src_root / "manifests", dst_root / "manifests")
    return dst_root / "manifests" / f"{NAME}.json"


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, by relative path: equal dicts = identical bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def view_sets_of(manifest_path: Path) -> list[dict]:
    """The manifest's view sets as plain dicts (what must match between runs)."""
    return [vs.to_dict() for vs in Manifest.load(manifest_path).view_sets]


SCREAMS = "screams"
# clip file stem -> (F0 Hz, relative vibrato depth) of the synthetic screams
SCREAM_CLIPS = {"scream_1500_vibrato": (1500.0, 0.04), "scream_1500_steady": (1500.0, 0.0)}


def make_scream_corpus(root: Path, seconds: float = 1.0) -> Path:
    """Two synthetic 1.5 kHz screams (:func:`pipeline.testing.signals.scream`, one with a
    +-4 % vibrato) as real 16 kHz WAVs under ``root/data``, imported through the CSV importer
    into ``root/manifests/screams.json``; returns the manifest path."""
    from pipeline.testing.signals import scream

    data = root / "data"
    rows = ["path,emotion,speaker"]
    for i, (stem, (f0_hz, vibrato)) in enumerate(SCREAM_CLIPS.items()):
        write_wav(data / "wav" / f"{stem}.wav", scream(f0_hz, vibrato, seconds))
        rows.append(f"wav/{stem}.wav,{('fear', 'anger')[i]},spk0{i + 1}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    path = root / "manifests" / f"{SCREAMS}.json"
    manifest, _ = build_manifest("csv", data, SCREAMS, seed=1, manifest_path=path)
    manifest.save(path)
    return path
