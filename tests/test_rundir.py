"""The run folder's records (trainer/rundir.py) and the atomic writes under it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.atomic import replace_folder, write_json, write_text
from trainer.errors import TrainerError
from trainer.rundir import (
    EpochRow,
    ModelRecord,
    RunDir,
    SeedRecord,
    append_epoch_row,
    read_epoch_rows,
    seed_dir_of,
    write_epoch_rows,
)

ROOT = Path(__file__).resolve().parents[1]

MODEL = ModelRecord(
    epoch=3,
    val_acc_task=0.625,
    seed=42,
    task="emotion",
    task_names=("anger", "joy"),
    adv_names=("s0", "s1", "s2"),
    dropout=0.2,
    grl_alpha=0.5,
    adversary=False,
)


def row(epoch: int, **changes) -> EpochRow:
    values = dict(
        epoch=epoch,
        step=4 * epoch,
        lr=1e-3 / epoch,
        train_ce=1.5 / epoch,
        train_consistency=0.01,
        train_adv=1.1,
        train_acc_task=0.25 * epoch,
        train_acc_adv=None,
        grl_alpha=None,
        val_acc_task=0.5,
        val_acc_adv=None,
        train_clips=40,
        seconds=1.25,
    )
    return EpochRow(**{**values, **changes})


def test_records_round_trip_through_json() -> None:
    assert ModelRecord.from_dict(json.loads(json.dumps(MODEL.to_dict()))) == MODEL
    seed = SeedRecord(seed=42, best_epoch=3, val_acc_task=0.625, last_epoch=5, steps=20)
    assert SeedRecord.from_dict(json.loads(json.dumps(seed.to_dict()))) == seed
    epoch = row(2, train_acc_adv=0.4, grl_alpha=0.75, val_acc_adv=0.3)
    assert EpochRow.from_dict(json.loads(json.dumps(epoch.to_dict()))) == epoch
    assert MODEL.to_dict()["schema_version"] == epoch.to_dict()["schema_version"] == 1


@pytest.mark.parametrize("version", [2, 99, "1", None])
def test_unknown_schema_versions_are_refused_naming_the_file(version) -> None:
    data = {**MODEL.to_dict(), "schema_version": version}
    with pytest.raises(TrainerError, match=r"best/model.json: schema_version .* not supported"):
        ModelRecord.from_dict(data, "best/model.json")


def test_unknown_missing_and_mistyped_fields_are_refused() -> None:
    with pytest.raises(TrainerError, match="unknown field 'colour'"):
        ModelRecord.from_dict({**MODEL.to_dict(), "colour": "red"})
    data = MODEL.to_dict()
    del data["task_names"]
    with pytest.raises(TrainerError, match="missing field 'task_names'"):
        ModelRecord.from_dict(data)
    with pytest.raises(TrainerError, match="'epoch' must be an integer"):
        ModelRecord.from_dict({**MODEL.to_dict(), "epoch": "3"})
    with pytest.raises(TrainerError, match="'val_acc_task' must be a number"):
        EpochRow.from_dict({**row(1).to_dict(), "val_acc_task": None})


def test_records_written_before_versioning_read_as_the_same_record() -> None:
    # The layout before schema_version: the same fields, no version key.
    legacy = {k: v for k, v in MODEL.to_dict().items() if k != "schema_version"}
    assert ModelRecord.from_dict(legacy) == MODEL
    old_row = {k: v for k, v in row(1).to_dict().items() if k != "schema_version"}
    assert EpochRow.from_dict(old_row) == row(1)


def test_metrics_jsonl_round_trip_append_and_trim(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_epoch_rows(path) == []
    write_epoch_rows(path, [])
    for epoch in (1, 2, 3):
        append_epoch_row(path, row(epoch))
    assert read_epoch_rows(path) == [row(1), row(2), row(3)]
    write_epoch_rows(path, [r for r in read_epoch_rows(path) if r.epoch < 3])
    assert [r.epoch for r in read_epoch_rows(path)] == [1, 2]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(TrainerError, match=r"metrics.jsonl:3: not a JSON row"):
        read_epoch_rows(path)


def test_seed_folders_and_the_legacy_finished_mark(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    for seed in (100, 42, 7):
        seed_dir = run.seed(seed)
        write_json(seed_dir.model_record_path, {**MODEL.to_dict(), "seed": seed})
    (run.path / "seed-x").mkdir()  # not a seed folder
    assert [s.seed for s in run.seeds_with_model()] == [7, 42, 100]
    assert seed_dir_of(run.path).seed == 7
    assert seed_dir_of(run.path, 100).path == run.path / "seed-100"
    assert seed_dir_of(run.path / "seed-42").seed == 42
    with pytest.raises(TrainerError, match="no finished model"):
        seed_dir_of(run.path, 5)

    seed_dir = run.seed(42)
    assert not seed_dir.finished
    # A run folder of the layout before version 1 marked a finished seed with its test record.
    write_json(seed_dir.legacy_test_metrics, {"seed": 42, "best_epoch": 2, "val_acc_task": 0.5})
    assert seed_dir.finished
    assert seed_dir.seed_record() == SeedRecord(42, 2, 0.5, None, None)
    seed_dir.write_seed_record(SeedRecord(42, 3, 0.75, 4, 16))
    assert seed_dir.seed_record().best_epoch == 3  # the versioned record wins


def test_not_a_run_folder_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(TrainerError, match="not a run folder"):
        RunDir(tmp_path).read_record()


# ----- atomic writes -------------------------------------------------------------------------
def _mode_under_umask(mask: int, tmp_path: Path) -> tuple[int, int, int]:
    """Modes of a file written by write_text, a folder by replace_folder and a file inside
    it, in a child process whose umask is ``mask`` (the umask is per process)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pipeline.atomic import replace_folder, write_text\n"
        f"os.umask({mask})\n"
        "root = Path(sys.argv[1])\n"
        "write_text(root / 'a.json', '{}')\n"
        "with replace_folder(root / 'best') as tmp:\n"
        "    (tmp / 'inner.txt').write_text('x')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return tuple(
        stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "a.json", tmp_path / "best", tmp_path / "best" / "inner.txt")
    )


@pytest.mark.parametrize(("mask", "expected"), [(0o022, (0o644, 0o755)), (0o077, (0o600, 0o700))])
def test_atomic_writes_respect_the_umask(tmp_path, mask, expected) -> None:
    file_mode, folder_mode, inner_mode = _mode_under_umask(mask, tmp_path)
    assert file_mode == expected[0]  # as open() would create it (mkstemp makes 0600)
    assert folder_mode == expected[1]  # as mkdir would (mkdtemp makes 0700)
    assert inner_mode == expected[0]


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_on_failure(tmp_path) -> None:
    target = tmp_path / "x.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    folder = tmp_path / "best"
    with replace_folder(folder) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), replace_folder(folder) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("killed while saving")
    assert (folder / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "x.txt"]
    write_json(tmp_path / "nan.json", {"x": float("nan"), "y": [1.5, float("inf")]})
    assert json.loads((tmp_path / "nan.json").read_text()) == {"x": None, "y": [1.5, None]}


# ----- a run records, resumes and is evaluated on its own view set ----------------------------
def _two_speaker_view_sets(folder: Path) -> Path:
    """The trainer corpus (speaker views N = 2, key ``test``) plus a larger speaker view set
    (N = 3, key ``more``) added afterwards, as ``perturb --views 3`` would."""
    from dataclasses import replace

    from pipeline.manifest import Manifest
    from pipeline.shards import ShardClip, open_view_set, write_view_set
    from pipeline.testing.toy import write_trainer_corpus

    path = write_trainer_corpus(folder, n_clips=24, views=2)
    manifest = Manifest.load(path)
    vs, readers = open_view_set(manifest, path, "speaker")
    clips = []
    for reader in readers:
        for i, cid in enumerate(reader.clip_ids):
            rows = reader.read_clip(i)
            clips.append(ShardClip(cid, np.concatenate([rows, rows[1:2] * 0.5]), [{}] * 3))
    more = write_view_set(
        folder / "cache" / manifest.dataset / "speaker-n3-more",
        clips,
        manifest_path=path,
        kind="speaker",
        views=3,
        seed=2,
        key="more",
        shard_size=vs.shard_size,
        code_version="test",
    )
    replace(manifest, view_sets=(*manifest.view_sets, more)).save(path)
    return path


def test_resume_and_evaluation_use_the_view_set_the_run_recorded(tmp_path) -> None:
    from dataclasses import replace

    import torch

    from pipeline.manifest import Manifest
    from trainer.config import TrainConfig
    from trainer.distributed import SINGLE
    from trainer.plan import plan_run, seed_plan, train_loader
    from trainer.rundir import RunRecord

    path = _two_speaker_view_sets(tmp_path)
    out = tmp_path / "run"
    config = TrainConfig(manifest=str(path), task="emotion", backbone="tiny", seeds=(1,))
    assert plan_run(config.replace(out=str(out))).view_set.key == "more"  # a new run: largest
    RunDir(out).write_record(RunRecord(config.replace(out=str(out)), 2, "test"))
    resumed = plan_run(config.replace(out=str(out), resume=True))
    assert resumed.view_set.key == "test" and resumed.views == 2
    assert plan_run(config.replace(out=str(out)), draw_splits=False).view_set.key == "test"
    seed = seed_plan(resumed, resumed.seed_splits[1])
    loader = train_loader(config, seed, 1, SINGLE, torch.device("cpu"))
    assert next(iter(loader)).audio.shape[1] == 3  # views 0..2 of the recorded set, not 0..3
    assert plan_run(config.replace(view_set_key="test")).view_set.key == "test"
    # The recorded view set gone: refused in one line naming it, never another set used.
    manifest = Manifest.load(path)
    replace(manifest, view_sets=tuple(v for v in manifest.view_sets if v.key != "test")).save(path)
    for attempt in (
        lambda: plan_run(config.replace(out=str(out), resume=True)),
        lambda: plan_run(config.replace(out=str(out)), draw_splits=False),
    ):
        with pytest.raises(TrainerError, match="'test' is not in the manifest") as error:
            attempt()
        assert "\n" not in str(error.value)
