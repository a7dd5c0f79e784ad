"""Hardening (issue 13): a damaged shard never reaches a reader silently, and repair restores it.

Before the fix a deleted chunk read back as silence, flipped bytes and edited offsets decoded
into wrong samples, and a truncated chunk crashed the readers with a traceback; only
``validate`` noticed. Now every read checks each clip's CRC-32 and stops with one line
naming the shard and ``ncore-prep validate --repair``, which recomputes the shard from the
source audio byte for byte. The cache is made once by the real stage (threads); every test
damages its own copy. (Training, evaluation and embed on damaged shards:
tests/test_hardening_trainer.py.)
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.qa import repair, validate
from pipeline.shards import ShardDamaged, ShardReader, open_view_set
from pipeline.testing.prep_corpus import NAME, make_corpus, tree_digest

SETTINGS = PerturbSettings(kinds=("speaker",), views=2, shard_size=4, seed=5)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damage")
    path = make_corpus(root)
    with ThreadPoolExecutor(1) as pool:
        summary = run_perturb(
            path, SETTINGS, fixed_executor(pool), cache_dir=root / "cache", progress=False
        )
    assert not summary.errors
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    for name in ("data", "manifests", "cache"):
        shutil.copytree(project / name, tmp_path / name)
    return tmp_path / "manifests" / f"{NAME}.json"


def delete_chunk(shard: Path) -> None:
    (shard / "audio" / "c" / "0" / "0").unlink()


def flip_bytes(shard: Path) -> None:
    chunk = shard / "audio" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    start = len(data) // 2
    for i in range(start, start + 40):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))


def edit_offsets(shard: Path) -> None:
    offsets = zarr.open_group(shard, mode="r+", zarr_format=3)["offsets"]
    values = np.asarray(offsets[:])
    values[1] += 100  # clip 0 longer, clip 1 shorter: still increasing, misaligned
    offsets[:] = values


def truncate_chunk(shard: Path) -> None:
    chunk = shard / "audio" / "c" / "0" / "0"
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size // 2)


DAMAGE = {
    "deleted chunk": delete_chunk,
    "flipped bytes": flip_bytes,
    "edited offsets": edit_offsets,
    "truncated chunk": truncate_chunk,
}


def _damaged_shard(copy: Path, damage) -> tuple[Path, list[str]]:
    vs = Manifest.load(copy).view_sets[0]
    shard = vs.shard_paths(copy)[1]
    ids = ShardReader(shard).clip_ids
    damage(shard)
    return shard, ids


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_every_reader_refuses_a_damaged_shard_in_one_line(copy, how):
    shard, ids = _damaged_shard(copy, DAMAGE[how])
    manifest = Manifest.load(copy)
    with pytest.raises(ShardDamaged) as info:
        _, readers = open_view_set(manifest, copy, "speaker")
        for reader in readers:
            for i in range(len(reader)):
                reader.read_clip(i, views=[0])  # even a subset of the rows is verified
    message = str(info.value)
    assert "\n" not in message
    assert str(shard) in message and f"ncore-prep validate --repair {copy}" in message
    # The other shards still read: only the damaged one is refused.
    vs = manifest.view_sets[0]
    for other in vs.shard_paths(copy):
        if other != shard:
            reader = ShardReader(other, copy)
            assert len(reader.read_range(0, len(reader))) == len(reader)
    # inspect of a damaged clip: one line, exit 1.
    try:
        damaged = ShardReader(shard, verify=False).clip_crc_mismatches()
    except Exception:  # undecodable: every clip of the shard
        damaged = ids
    assert damaged
    result = CliRunner().invoke(
        main, ["inspect", str(copy), "--clip", damaged[0], "--out", str(copy.parent / "x")]
    )
    assert result.exit_code == 1, result.output
    assert "damaged shard" in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_repair_restores_the_original_bytes(copy, how):
    folder = Manifest.load(copy).view_sets[0].folder_path(copy)
    original = tree_digest(folder)
    listed = copy.read_bytes()
    _damaged_shard(copy, DAMAGE[how])
    assert tree_digest(folder) != original
    assert not validate(copy).ok
    with ThreadPoolExecutor(1) as pool:
        outcome = repair(copy, fixed_executor(pool))
    assert outcome.recomputed == {Manifest.load(copy).view_sets[0].key: [1]}
    assert outcome.restored == 1 and not outcome.changed
    assert outcome.report.ok
    assert tree_digest(folder) == original  # every file of every shard, byte for byte
    assert copy.read_bytes() == listed  # the manifest lists exactly what it listed before
    with ThreadPoolExecutor(1) as pool:
        again = repair(copy, fixed_executor(pool))
    assert again.recomputed == {} and again.lines()[0].startswith("nothing to repair")
