"""``ncore-prep validate``: a clean cache passes; damage is found and named by shard and clip.

The cache is made once by the real stage (threads instead of a Dask cluster: the cluster is
tested in test_prep.py); every test damages its own copy.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.qa import validate
from pipeline.shards import ShardReader
from pipeline.testing.prep_corpus import NAME, make_corpus

SETTINGS = PerturbSettings(kinds=("speaker",), views=2, shard_size=4, seed=5)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qa")
    path = make_corpus(root)
    with ThreadPoolExecutor(1) as pool:
        summary = run_perturb(
            path, SETTINGS, fixed_executor(pool), cache_dir=root / "cache", progress=False
        )
    assert not summary.errors
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    """A private copy of the project; returns its manifest path."""
    for name in ("data", "manifests", "cache"):
        shutil.copytree(project / name, tmp_path / name)
    return tmp_path / "manifests" / f"{NAME}.json"


def _shard(manifest_path: Path, index: int) -> tuple[Path, list[str]]:
    vs = Manifest.load(manifest_path).view_sets[0]
    path = vs.shard_paths(manifest_path)[index]
    return path, ShardReader(path).clip_ids


def _where(report) -> list[str]:
    return [p.where for p in report.errors]


def test_clean_cache_passes_and_everything_is_read(copy):
    report = validate(copy)
    assert report.ok, [str(p) for p in report.problems]
    vs = Manifest.load(copy).view_sets[0]
    assert report.shards == vs.num_shards == len(vs.shards)
    assert report.clips == sum(s.clips for s in vs.shards) == 11
    assert report.samples == sum(s.samples for s in vs.shards)


def test_corrupted_chunk_file_names_shard_and_clips(copy):
    shard, ids = _shard(copy, 1)
    chunk = shard / "audio" / "c" / "0" / "0"  # the one file of the sharded audio array
    data = bytearray(chunk.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    report = validate(copy)
    assert not report.ok
    where = _where(report)
    assert any(w.endswith(shard.name) for w in where)
    named = {w.removeprefix("clip ") for w in where if w.startswith("clip ")}
    assert named and named <= set(ids)
    assert all(shard.name in str(p) for p in report.errors)  # no other shard is blamed


def test_truncated_shard_is_caught(copy):
    shard, ids = _shard(copy, 2)
    chunk = shard / "audio" / "c" / "0" / "0"
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size // 2)
    report = validate(copy)
    assert not report.ok
    assert any(w.endswith(shard.name) for w in _where(report))
    assert {w.removeprefix("clip ") for w in _where(report) if w.startswith("clip ")} <= set(ids)


def test_missing_shard_and_hand_edited_manifest_are_caught(copy):
    shard, _ = _shard(copy, 0)
    shutil.rmtree(shard)
    data = json.loads(copy.read_text())
    vs = data["view_sets"][0]
    vs["shards"][1]["samples"] += 1
    vs["params"]["formant_ratio_max"] = 1.3  # no longer what the key was computed from
    first = next(c for c in data["clips"] if c["id"] in _shard(copy, 2)[1])
    first["num_samples"] += 10
    copy.write_text(json.dumps(data))
    report = validate(copy)
    text = [str(p) for p in report.errors]
    assert any(shard.name in t and "missing on disk" in t for t in text)
    assert any("shard-00001.zarr" in t and "samples stored" in t for t in text)
    assert any(t.startswith(f"view set speaker-n2-{vs['key']}") and "key" in t for t in text)
    assert any(t.startswith(f"clip {first['id']}") and "samples" in t for t in text)


def test_stray_folders_are_warnings_and_broken_json_is_an_error(copy):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    (folder / "shard-00099.zarr.tmp-123").mkdir()
    report = validate(copy)
    assert report.ok and any("unfinished" in str(p) for p in report.warnings)
    copy.write_text(copy.read_text()[:-40])
    report = validate(copy)
    assert not report.ok and report.errors[0].where == "manifest"


def test_cli_exit_status_follows_the_findings(copy):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(copy)])
    assert ok.exit_code == 0, ok.output
    shard, _ = _shard(copy, 0)
    (shard / "offsets" / "zarr.json").unlink()
    bad = runner.invoke(main, ["validate", str(copy)])
    assert bad.exit_code == 1
    assert shard.name in bad.output and "problem(s) found" in bad.output


def test_swapped_shards_are_named_by_their_recorded_index(copy):
    first, _ = _shard(copy, 0)
    second, _ = _shard(copy, 1)
    first.rename(first.with_name("swap"))
    second.rename(first)
    first.with_name("swap").rename(second)
    text = [str(p) for p in validate(copy).errors]
    assert any(first.name in t and "shard_index=1 but the view set says 0" in t for t in text)
    assert any(second.name in t and "shard_index=0 but the view set says 1" in t for t in text)
