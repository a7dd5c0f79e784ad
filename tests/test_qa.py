"""``ncore-prep validate``: a clean cache passes; damage is found and named by shard and clip.

The cache is made once by the real stage (threads instead of a Dask cluster: the cluster is
tested in test_prep.py); every test damages its own copy.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.qa import repair, validate
from pipeline.shards import ShardReader
from pipeline.testing.prep_corpus import GONE_ID, NAME, make_corpus, restore_gone, tree_digest

REPO = Path(__file__).resolve().parents[1]

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


# ------------------------------------------------ repairs tell the truth (issue 22, section 3)


def _repair_cli(manifest_path: Path, env: dict[str, str] | None = None):
    """``ncore-prep validate --repair`` as a real subprocess (one local worker)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "validate",
            "--repair",
            str(manifest_path),
            "--workers",
            "1",
        ],
        cwd=manifest_path.parents[1],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
    )


def _listed(manifest_path: Path) -> set[int]:
    return {s.index for s in Manifest.load(manifest_path).view_sets[0].shards}


def _cannot_write_over_a_file(shard: Path) -> None:
    """Damage a shard so that no worker can write it back: a file where its folder was (a
    worker's rmtree of it fails), the case of a read-only or foreign cache, even for root."""
    shutil.rmtree(shard)
    shard.write_bytes(b"not a shard")


def test_a_repair_that_cannot_write_exits_1_and_keeps_the_shard_listed(copy):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    original = tree_digest(folder)
    shard, _ = _shard(copy, 1)
    _cannot_write_over_a_file(shard)
    result = CliRunner().invoke(main, ["validate", "--repair", str(copy), "--workers", "1"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "could not recompute 1 of 1 shard(s)" in errors[0], result.output
    assert "recomputed 1 shard(s)" not in result.output  # what the old repair claimed
    assert "recomputed 0 of 1 shard(s)" in result.output
    # Never loses track of it: still listed, still an error, found again by the next repair.
    assert 1 in _listed(copy)
    assert 1 in validate(copy).damaged[Manifest.load(copy).view_sets[0].key]
    shard.unlink()  # the cause is fixed
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(copy, fixed_executor(pool))
    assert outcome.ok and outcome.report.ok, outcome.lines()
    assert tree_digest(folder) == original


def test_a_repair_on_a_read_only_cache_exits_1(copy, tmp_path):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    shard, _ = _shard(copy, 2)
    shutil.rmtree(shard)
    # chattr +i (immutable) refuses writes even to root, which ignores file modes.
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with ThreadPoolExecutor(1) as pool:
            outcome = repair(copy, fixed_executor(pool))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert not outcome.ok and outcome.errors, outcome.lines()
    assert outcome.unfinished == {Manifest.load(copy).view_sets[0].key: [2]}
    assert outcome.failure_line().startswith("could not recompute 1 of 1 shard(s)")
    assert 2 in _listed(copy) and not validate(copy).ok
    with ThreadPoolExecutor(1) as pool:
        assert repair(copy, fixed_executor(pool)).ok


@pytest.mark.slow
def test_a_killed_repair_is_found_and_finished_by_the_next(copy):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    original = tree_digest(folder)
    shard, _ = _shard(copy, 1)
    flip = shard / "audio" / "c" / "0" / "0"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flip.write_bytes(bytes(data))
    killed = _repair_cli(copy, {"NCORE_KILL_AT": "perturb:planned"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = validate(copy)
    assert not after.ok and 1 in after.damaged[Manifest.load(copy).view_sets[0].key]
    again = _repair_cli(copy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recomputed 1 shard(s); 1 restored byte for byte" in again.stdout
    assert tree_digest(folder) == original


def _drop_shard_entry(manifest_path: Path, index: int) -> None:
    """What the old repair left after a failure: the entry and its clips' failures gone."""
    data = json.loads(manifest_path.read_text())
    vs = data["view_sets"][0]
    members = ShardReader(_shard(manifest_path, index)[0]).clip_ids
    vs["shards"] = [s for s in vs["shards"] if s["index"] != index]
    vs["failures"] = [f for f in vs["failures"] if f["id"] not in members]
    manifest_path.write_text(json.dumps(data))


def test_an_incomplete_view_set_is_repaired_and_its_perturb_command_completes_it(copy):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    original, listed = tree_digest(folder), copy.read_text()
    _drop_shard_entry(copy, 3)
    report = validate(copy)
    warning = next(str(p) for p in report.warnings if "incomplete" in str(p))
    assert "ncore-prep perturb" in warning and "--shard-size 4" in warning
    assert "--cache-dir" in warning  # perturb writes a view set only under its own cache root
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(copy, fixed_executor(pool))
    assert outcome.recomputed == {Manifest.load(copy).view_sets[0].key: [3]}
    assert outcome.ok and Manifest.load(copy).view_sets[0].complete
    assert tree_digest(folder) == original and copy.read_text() == listed
    # The command the warning prints finishes the set too, with the same key and bytes.
    _drop_shard_entry(copy, 0)
    command = warning.split("`")[-2]
    args = [*shlex.split(command)[2:], "--workers", "1", "--executor", "processes"]
    result = CliRunner().invoke(main, ["perturb", *args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [vs.key for vs in Manifest.load(copy).view_sets] == [outcome.recomputed.popitem()[0]]
    assert tree_digest(folder) == original and copy.read_text() == listed


def test_a_missing_file_that_comes_back_is_repaired(copy):
    vs = Manifest.load(copy).view_sets[0]
    assert GONE_ID in {f.id for f in vs.failures}
    with ThreadPoolExecutor(1) as pool:
        assert repair(copy, fixed_executor(pool)).recomputed == {}  # still gone: nothing to do
    restore_gone(copy)
    report = validate(copy)
    assert report.ok and report.retry == {vs.key: {_index_of(copy, GONE_ID)}}
    assert any("readable now" in str(p) for p in report.warnings)
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(copy, fixed_executor(pool))
    assert outcome.ok, outcome.lines()
    after = Manifest.load(copy).view_sets[0]
    assert GONE_ID not in {f.id for f in after.failures}
    assert any(GONE_ID in ShardReader(p).clip_ids for p in after.shard_paths(copy))
    with ThreadPoolExecutor(1) as pool:
        assert repair(copy, fixed_executor(pool)).recomputed == {}


def _index_of(manifest_path: Path, clip_id: str) -> int:
    ids = [c.id for c in Manifest.load(manifest_path).clips]
    return ids.index(clip_id) // SETTINGS.shard_size


def test_a_repair_whose_clips_all_fail_exits_1_then_finishes_when_the_data_is_back(copy):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    original = tree_digest(folder)
    shard, ids = _shard(copy, 1)
    shutil.rmtree(shard)
    data = copy.parents[1] / "data"
    data.rename(data.with_name("unmounted"))  # the disk holding the corpus is gone
    result = CliRunner().invoke(main, ["validate", "--repair", str(copy), "--workers", "1"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: repair incomplete:") and "every one of the 4 clip(s)" in last
    assert "missing file" in last
    data.with_name("unmounted").rename(data)  # it is back: the transient failures are retried
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(copy, fixed_executor(pool))
    assert outcome.ok and outcome.report.ok, outcome.lines()
    assert ShardReader(shard).clip_ids == ids and tree_digest(folder) == original
