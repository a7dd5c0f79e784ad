"""ReCANVo and ReCANVo-Balanced importers: label rules, water-filling, Tables 6 and 7."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.datasets import build_manifest
from pipeline.datasets.recanvo import water_fill
from pipeline.testing.corpus_trees import (
    RECANVO_PARTICIPANTS,
    RECANVO_TABLE,
    make_recanvo,
    recanvo_rows,
)

# Paper, appendix A.2 (participants P01 P02 P03 P05 P06 P08 P11 P16).
TABLE6 = {
    "delighted": (357, 43, 25, 235, 227, 39, 207, 139),
    "dysregulated": (212, 0, 302, 116, 5, 13, 22, 34),
    "frustrated": (150, 56, 47, 283, 30, 781, 27, 162),
    "request": (130, 13, 61, 6, 124, 44, 22, 19),
    "selftalk": (564, 34, 55, 286, 56, 503, 33, 354),
    "social": (182, 247, 0, 0, 1, 93, 52, 59),
    "laughter": (0, 38, 8, 13, 0, 42, 0, 0),
}
TABLE7 = {
    "delighted": (13, 13, 13, 13, 12, 12, 12, 12),
    "dysregulated": (17, 0, 17, 16, 5, 13, 16, 16),
    "frustrated": (12, 12, 13, 13, 12, 13, 13, 12),
    "request": (14, 13, 13, 6, 14, 13, 13, 14),
    "selftalk": (13, 12, 13, 12, 12, 13, 13, 12),
    "social": (20, 20, 0, 0, 1, 20, 20, 19),
    "laughter": (0, 38, 8, 13, 0, 41, 0, 0),
}


def _table(manifest):
    cells = Counter((c.emotion, c.speaker) for c in manifest.clips)
    return {
        label: tuple(cells[label, p] for p in RECANVO_PARTICIPANTS)
        for label in manifest.labels["emotion"]
    }


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory):
    """A ReCANVo folder whose label table matches the release's (7,077 tiny files)."""
    return make_recanvo(tmp_path_factory.mktemp("recanvo") / "ReCANVo", recanvo_rows())


@pytest.mark.slow
def test_default_preset_is_table6(full_tree):
    manifest, summary = build_manifest("recanvo", full_tree, seed=42)
    assert summary.found == 7077
    assert summary.imported == 6551
    assert summary.found == summary.imported + summary.failed
    assert set(manifest.labels["emotion"]) == set(TABLE6)
    assert _table(manifest) == TABLE6
    assert summary.failed_by_reason == {"excluded by label rules": 7077 - 6551}
    # Mono and stereo 44.1 kHz sources alternate in the tree.
    assert {c.source_channels for c in manifest.clips} == {1, 2}
    assert {c.source_sample_rate for c in manifest.clips} == {44100}


@pytest.mark.slow
def test_balanced_preset_is_table7(full_tree):
    manifest, summary = build_manifest("recanvo-balanced", full_tree, seed=42)
    assert summary.imported == 700 and summary.found == 7077
    assert summary.found == summary.imported + summary.failed
    table = _table(manifest)
    assert set(table) == set(TABLE7)
    for label, row in table.items():
        assert sum(row) == 100, label
        assert max(row) <= 50, label  # no majority
        # Cells may differ by one where the remainders are placed.
        assert all(abs(a - b) <= 1 for a, b in zip(row, TABLE7[label], strict=True)), label
        # A participant with fewer clips than its share gives all it has.
        for have, got in zip(TABLE6[label], row, strict=True):
            assert got <= have
    # The draw does not depend on the split seed, but on the balance seed.
    again, _ = build_manifest("recanvo-balanced", full_tree, seed=7)
    assert {c.id for c in again.clips} == {c.id for c in manifest.clips}
    other, _ = build_manifest("recanvo-balanced", full_tree, seed=7, balance_seed=1)
    assert {c.id for c in other.clips} != {c.id for c in manifest.clips}


def _small_rows():
    """Every one of the 22 labels, at most 3 clips per cell."""
    small = {label: tuple(min(n, 3) for n in counts) for label, counts in RECANVO_TABLE.items()}
    return recanvo_rows(small), small


def test_small_tree_crlf_mono_stereo_all_labels(tmp_path):
    rows, small = _small_rows()
    root = make_recanvo(tmp_path / "ReCANVo", rows, samples=441)
    assert b"\r\n" in (root / "dataset_file_directory.csv").read_bytes()
    manifest, summary = build_manifest("recanvo", root, seed=3)
    kept = {"delighted", "dysregulated", "frustrated", "request", "selftalk", "social"}
    expected = sum(sum(small[k]) for k in kept) + sum(small["laugh"]) + sum(small["laughter"])
    assert summary.imported == expected
    assert summary.found == len(rows) == summary.imported + summary.failed
    assert "laugh" not in manifest.labels["emotion"]
    assert manifest.counts("emotion")["laughter"] == sum(small["laugh"]) + sum(small["laughter"])
    assert {c.source_channels for c in manifest.clips} == {1, 2}
    assert all(c.num_samples == 160 for c in manifest.clips)  # 441 samples at 44.1 kHz
    odd = [c for c in manifest.clips if c.path.startswith("Clip ")]
    assert odd and all(" " not in c.id and "(" not in c.id for c in odd)
    excluded = {f.path.split(",")[0] for f in manifest.failures}
    assert len(excluded) == summary.failed


def test_rules_are_options(tmp_path):
    rows, small = _small_rows()
    root = make_recanvo(tmp_path / "ReCANVo", rows)
    every, _ = build_manifest("recanvo", root, seed=3, keep="all", merge="")
    assert len(every.labels["emotion"]) == 22
    counted, _ = build_manifest("recanvo", root, seed=3, keep="all", min_count=10)
    # The default merge (laugh -> laughter) applies before counting.
    counts = Counter("laughter" if r[2] == "laugh" else r[2] for r in rows)
    assert set(counted.labels["emotion"]) == {lab for lab, n in counts.items() if n >= 10}
    merged, _ = build_manifest(
        "recanvo", root, seed=3, keep="happy,delighted", merge="happy=delighted,glee=delighted"
    )
    assert merged.labels["emotion"] == ("delighted",)
    assert len(merged.clips) == sum(small["happy"]) + sum(small["glee"]) + sum(small["delighted"])


def test_missing_listed_file_and_bad_audio_are_failures(tmp_path):
    rows, _ = _small_rows()
    root = make_recanvo(tmp_path / "ReCANVo", rows)
    kept = [r for r in rows if r[2] == "social"]
    (root / kept[0][0]).unlink()
    (root / kept[1][0]).write_bytes(b"")
    manifest, summary = build_manifest("recanvo", root, seed=3)
    assert summary.found == len(rows) == summary.imported + summary.failed
    assert summary.failed_by_reason["missing file"] == 1
    assert summary.failed_by_reason["empty file"] == 1
    assert all(f.stage == "import" for f in manifest.failures)


@settings(max_examples=200, deadline=None)
@given(
    available=st.lists(st.integers(0, 400), min_size=1, max_size=9),
    target=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_water_fill_properties(available, target, seed):
    names = [f"P{i:02d}" for i in range(len(available))]
    have = dict(zip(names, available, strict=True))
    alloc = water_fill(have, target, np.random.default_rng(seed))
    caps = {p: min(n, target // 2) for p, n in have.items()}
    assert sum(alloc.values()) == min(target, sum(caps.values()))
    assert all(0 <= alloc[p] <= caps[p] for p in names)
    # Water level: a participant below its cap is within one of every other's allocation.
    below = [alloc[p] for p in names if alloc[p] < caps[p]]
    if below:
        assert max(alloc.values()) - min(below) <= 1
