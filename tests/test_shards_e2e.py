"""Damaged shards end to end (a regression of issue 13): training, evaluation and embed
refuse a damaged shard in one line, and ``ncore-prep validate --repair`` restores the
original bytes.

Before the fix a deleted chunk trained on silence (exit 0), flipped bytes and edited offsets
trained on wrong samples, and embed read them without a word. The corpus is the real
pipeline's (WAV -> manifest -> WORLD views -> Zarr shards), the run a real tiny one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main as prep_main
from pipeline.manifest import Manifest
from pipeline.testing.damage import SHARD_DAMAGE
from pipeline.testing.eval_corpus import TRAIN_OPTIONS, prepared_corpus
from pipeline.testing.prep_corpus import tree_digest
from pipeline.viewset import shard_members
from trainer.cli import main as train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A private copy of the shared corpus with one finished tiny run in ``runs/r``."""
    corpus = prepared_corpus(tmp_path_factory.getbasetemp()).parents[1]
    root = tmp_path_factory.mktemp("damage-e2e")
    for name in ("data", "manifests", "cache"):
        shutil.copytree(corpus / name, root / name)
    manifest = root / "manifests" / "syn.json"
    result = CliRunner().invoke(
        train_main, ["--manifest", str(manifest), *TRAIN_OPTIONS, "--out", str(root / "runs/r")]
    )
    assert result.exit_code == 0, result.output
    return root


def _victim(manifest_path: Path) -> int:
    """A shard index holding both training and test clips (every command reads it)."""
    m = Manifest.load(manifest_path)
    split = {c.id: c.split for c in m.clips}
    size = m.view_sets[0].shard_size
    for index, ids in enumerate(shard_members(m, size)):
        if {"train", "test"} <= {split[c] for c in ids}:
            return index
    raise AssertionError("no shard holds both splits")


# The truncated chunk is left to the readers' test (tests/test_shards.py): a training per case.
DAMAGE = {k: v for k, v in SHARD_DAMAGE.items() if k != "truncated chunk"}


def _refused(result, shard: Path, manifest: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "damaged shard" in last, result.output
    assert str(shard) in last and f"ncore-prep validate --repair {manifest}" in last


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_train_evaluate_and_embed_refuse_a_damaged_shard_and_repair_restores_it(
    project, tmp_path, how
):
    # In place (the run's config names this manifest); each case ends with the repair
    # restoring every byte, which it asserts, so the next case starts from a clean cache.
    manifest = project / "manifests" / "syn.json"
    index = _victim(manifest)
    m = Manifest.load(manifest)
    folders = [vs.folder_path(manifest) for vs in m.view_sets]
    original = {f: tree_digest(f) for f in folders}
    shards = [vs.shard_paths(manifest)[index] for vs in m.view_sets]
    for shard in shards:  # the same clips in every view set, so every reader meets damage
        DAMAGE[how](shard)
    runner = CliRunner()

    trained = runner.invoke(
        train_main, ["--manifest", str(manifest), *TRAIN_OPTIONS, "--out", str(tmp_path / "new")]
    )
    _refused(trained, shards[0], manifest)

    run = project / "runs" / "r"
    evaluated = runner.invoke(train_main, ["evaluate", str(run), "--force", "--no-figures"])
    assert evaluated.exit_code == 1 and "damaged shard" in evaluated.output.splitlines()[-1]
    assert "Traceback" not in evaluated.output

    out = tmp_path / "emb" / "e.npz"
    embedded = runner.invoke(
        train_main, ["embed", "--run", str(run), "--manifest", str(manifest), "--out", str(out)]
    )
    assert embedded.exit_code == 1 and "damaged shard" in embedded.output.splitlines()[-1]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))

    repaired = runner.invoke(prep_main, ["validate", "--repair", str(manifest), "--workers", "1"])
    assert repaired.exit_code == 0, repaired.output
    assert f"recomputed {len(shards)} shard(s); {len(shards)} restored byte for byte" in (
        repaired.output
    )
    assert {f: tree_digest(f) for f in folders} == original
