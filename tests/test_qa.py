"""``ncore-prep validate``: a clean cache passes; damage is found and named by shard and clip.

The cache is made once by the real stage (threads instead of a Dask cluster: the cluster is
tested in test_prep.py); every test damages its own copy (tests/conftest.py: ``project_copy``).
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
from pipeline.prep import fixed_executor
from pipeline.qa import repair, validate
from pipeline.shards import ShardReader
from pipeline.testing.damage import SHARD_DAMAGE
from pipeline.testing.prep_corpus import GONE_ID, restore_gone, tree_digest

REPO = Path(__file__).resolve().parents[1]


def _shard(manifest_path: Path, index: int) -> tuple[Path, list[str]]:
    vs = Manifest.load(manifest_path).view_sets[0]
    path = vs.shard_paths(manifest_path)[index]
    return path, ShardReader(path).clip_ids


def _where(report) -> list[str]:
    return [p.where for p in report.errors]


def test_clean_cache_passes_and_everything_is_read(project_copy):
    report = validate(project_copy)
    assert report.ok, [str(p) for p in report.problems]
    vs = Manifest.load(project_copy).view_sets[0]
    assert report.shards == vs.num_shards == len(vs.shards)
    assert report.clips == sum(s.clips for s in vs.shards) == 11
    assert report.samples == sum(s.samples for s in vs.shards)


def test_corrupted_chunk_file_names_shard_and_clips(project_copy):
    shard, ids = _shard(project_copy, 1)
    chunk = shard / "audio" / "c" / "0" / "0"  # the one file of the sharded audio array
    data = bytearray(chunk.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    report = validate(project_copy)
    assert not report.ok
    where = _where(report)
    assert any(w.endswith(shard.name) for w in where)
    named = {w.removeprefix("clip ") for w in where if w.startswith("clip ")}
    assert named and named <= set(ids)
    assert all(shard.name in str(p) for p in report.errors)  # no other shard is blamed


def test_truncated_shard_is_caught(project_copy):
    shard, ids = _shard(project_copy, 2)
    chunk = shard / "audio" / "c" / "0" / "0"
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size // 2)
    report = validate(project_copy)
    assert not report.ok
    assert any(w.endswith(shard.name) for w in _where(report))
    assert {w.removeprefix("clip ") for w in _where(report) if w.startswith("clip ")} <= set(ids)


def test_missing_shard_and_hand_edited_manifest_are_caught(project_copy):
    shard, _ = _shard(project_copy, 0)
    shutil.rmtree(shard)
    data = json.loads(project_copy.read_text())
    vs = data["view_sets"][0]
    vs["shards"][1]["samples"] += 1
    vs["params"]["formant_ratio_max"] = 1.3  # no longer what the key was computed from
    first = next(c for c in data["clips"] if c["id"] in _shard(project_copy, 2)[1])
    first["num_samples"] += 10
    project_copy.write_text(json.dumps(data))
    report = validate(project_copy)
    text = [str(p) for p in report.errors]
    assert any(shard.name in t and "missing on disk" in t for t in text)
    assert any("shard-00001.zarr" in t and "samples stored" in t for t in text)
    assert any(t.startswith(f"view set speaker-n2-{vs['key']}") and "key" in t for t in text)
    assert any(t.startswith(f"clip {first['id']}") and "samples" in t for t in text)


def test_stray_folders_are_warnings_and_broken_json_is_an_error(project_copy):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    (folder / "shard-00099.zarr.tmp-123").mkdir()
    report = validate(project_copy)
    assert report.ok and any("unfinished" in str(p) for p in report.warnings)
    project_copy.write_text(project_copy.read_text()[:-40])
    report = validate(project_copy)
    assert not report.ok and report.errors[0].where == "manifest"


def test_cli_exit_status_follows_the_findings(project_copy):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(project_copy)])
    assert ok.exit_code == 0, ok.output
    shard, _ = _shard(project_copy, 0)
    (shard / "offsets" / "zarr.json").unlink()
    bad = runner.invoke(main, ["validate", str(project_copy)])
    assert bad.exit_code == 1
    assert shard.name in bad.output and "problem(s) found" in bad.output


def test_swapped_shards_are_named_by_their_recorded_index(project_copy):
    first, _ = _shard(project_copy, 0)
    second, _ = _shard(project_copy, 1)
    first.rename(first.with_name("swap"))
    second.rename(first)
    first.with_name("swap").rename(second)
    text = [str(p) for p in validate(project_copy).errors]
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


def test_a_repair_that_cannot_write_exits_1_and_keeps_the_shard_listed(project_copy):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    original = tree_digest(folder)
    shard, _ = _shard(project_copy, 1)
    _cannot_write_over_a_file(shard)
    result = CliRunner().invoke(main, ["validate", "--repair", str(project_copy), "--workers", "1"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "could not recompute 1 of 1 shard(s)" in errors[0], result.output
    assert "recomputed 1 shard(s)" not in result.output  # what the old repair claimed
    assert "recomputed 0 of 1 shard(s)" in result.output
    # Never loses track of it: still listed, still an error, found again by the next repair.
    assert 1 in _listed(project_copy)
    assert 1 in validate(project_copy).damaged[Manifest.load(project_copy).view_sets[0].key]
    shard.unlink()  # the cause is fixed
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(project_copy, fixed_executor(pool))
    assert outcome.ok and outcome.report.ok, outcome.lines()
    assert tree_digest(folder) == original


def test_a_repair_on_a_read_only_cache_exits_1(project_copy, tmp_path):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    shard, _ = _shard(project_copy, 2)
    shutil.rmtree(shard)
    # chattr +i (immutable) refuses writes even to root, which ignores file modes.
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with ThreadPoolExecutor(1) as pool:
            outcome = repair(project_copy, fixed_executor(pool))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert not outcome.ok and outcome.errors, outcome.lines()
    assert outcome.unfinished == {Manifest.load(project_copy).view_sets[0].key: [2]}
    assert outcome.failure_line().startswith("could not recompute 1 of 1 shard(s)")
    assert 2 in _listed(project_copy) and not validate(project_copy).ok
    with ThreadPoolExecutor(1) as pool:
        assert repair(project_copy, fixed_executor(pool)).ok


@pytest.mark.slow
def test_a_killed_repair_is_found_and_finished_by_the_next(project_copy):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    original = tree_digest(folder)
    shard, _ = _shard(project_copy, 1)
    flip = shard / "audio" / "c" / "0" / "0"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flip.write_bytes(bytes(data))
    killed = _repair_cli(project_copy, {"NCORE_KILL_AT": "perturb:planned"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = validate(project_copy)
    assert not after.ok and 1 in after.damaged[Manifest.load(project_copy).view_sets[0].key]
    again = _repair_cli(project_copy)
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


def test_an_incomplete_view_set_is_repaired_and_its_perturb_command_completes_it(project_copy):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    original, listed = tree_digest(folder), project_copy.read_text()
    _drop_shard_entry(project_copy, 3)
    report = validate(project_copy)
    warning = next(str(p) for p in report.warnings if "incomplete" in str(p))
    assert "ncore-prep perturb" in warning and "--shard-size 4" in warning
    assert "--cache-dir" in warning  # perturb writes a view set only under its own cache root
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(project_copy, fixed_executor(pool))
    assert outcome.recomputed == {Manifest.load(project_copy).view_sets[0].key: [3]}
    assert outcome.ok and Manifest.load(project_copy).view_sets[0].complete
    assert tree_digest(folder) == original and project_copy.read_text() == listed
    # The command the warning prints finishes the set too, with the same key and bytes.
    _drop_shard_entry(project_copy, 0)
    command = warning.split("`")[-2]
    args = [*shlex.split(command)[2:], "--workers", "1", "--executor", "processes"]
    result = CliRunner().invoke(main, ["perturb", *args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [vs.key for vs in Manifest.load(project_copy).view_sets] == [
        outcome.recomputed.popitem()[0]
    ]
    assert tree_digest(folder) == original and project_copy.read_text() == listed


def test_a_missing_file_that_comes_back_is_repaired(project_copy):
    vs = Manifest.load(project_copy).view_sets[0]
    assert GONE_ID in {f.id for f in vs.failures}
    with ThreadPoolExecutor(1) as pool:
        assert (
            repair(project_copy, fixed_executor(pool)).recomputed == {}
        )  # still gone: nothing to do
    restore_gone(project_copy)
    report = validate(project_copy)
    assert report.ok and report.retry == {vs.key: {_index_of(project_copy, GONE_ID)}}
    assert any("readable now" in str(p) for p in report.warnings)
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(project_copy, fixed_executor(pool))
    assert outcome.ok, outcome.lines()
    after = Manifest.load(project_copy).view_sets[0]
    assert GONE_ID not in {f.id for f in after.failures}
    assert any(GONE_ID in ShardReader(p).clip_ids for p in after.shard_paths(project_copy))
    with ThreadPoolExecutor(1) as pool:
        assert repair(project_copy, fixed_executor(pool)).recomputed == {}


def _index_of(manifest_path: Path, clip_id: str) -> int:
    manifest = Manifest.load(manifest_path)
    ids = [c.id for c in manifest.clips]
    return ids.index(clip_id) // manifest.view_sets[0].shard_size


def test_a_repair_whose_clips_all_fail_exits_1_then_finishes_when_the_data_is_back(project_copy):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    original = tree_digest(folder)
    shard, ids = _shard(project_copy, 1)
    shutil.rmtree(shard)
    data = project_copy.parents[1] / "data"
    data.rename(data.with_name("unmounted"))  # the disk holding the corpus is gone
    result = CliRunner().invoke(main, ["validate", "--repair", str(project_copy), "--workers", "1"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: repair incomplete:") and "every one of the 4 clip(s)" in last
    assert "missing file" in last
    data.with_name("unmounted").rename(data)  # it is back: the transient failures are retried
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(project_copy, fixed_executor(pool))
    assert outcome.ok and outcome.report.ok, outcome.lines()
    assert ShardReader(shard).clip_ids == ids and tree_digest(folder) == original


# A regression of issue 13: every kind of damage a reader refuses (tests/test_shards.py) is
# repaired to the original bytes.
@pytest.mark.parametrize("how", sorted(SHARD_DAMAGE))
def test_repair_restores_the_original_bytes(project_copy, how):
    folder = Manifest.load(project_copy).view_sets[0].folder_path(project_copy)
    original = tree_digest(folder)
    listed = project_copy.read_bytes()
    shard, _ = _shard(project_copy, 1)
    SHARD_DAMAGE[how](shard)
    assert tree_digest(folder) != original
    assert not validate(project_copy).ok
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(project_copy, fixed_executor(pool))
    assert outcome.recomputed == {Manifest.load(project_copy).view_sets[0].key: [1]}
    assert outcome.restored == 1 and not outcome.changed
    assert outcome.report.ok
    assert tree_digest(folder) == original  # every file of every shard, byte for byte
    assert project_copy.read_bytes() == listed  # the manifest lists exactly what it listed before
    with ThreadPoolExecutor(1) as pool:
        again = repair(project_copy, fixed_executor(pool))
    assert again.recomputed == {} and again.lines()[0].startswith("nothing to repair")
