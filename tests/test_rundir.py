"""The run folder (trainer/rundir.py): its records, their versions and damage, migration, and
the lock and config check that keep two trainings out of one folder.

(The atomic writes under it: tests/test_atomic.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.atomic import write_json
from pipeline.manifest import Manifest, ManifestError
from pipeline.testing.processes import one_line_error, process_error
from pipeline.testing.toy import toy_train_args
from trainer.cli import main
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


def test_records_written_before_versioning_are_refused_naming_the_migrate_command() -> None:
    # The layout before schema_version: the same fields, no version key.
    legacy = {k: v for k, v in MODEL.to_dict().items() if k != "schema_version"}
    with pytest.raises(TrainerError, match=r"model.json: no schema_version: .*ncore-train migrate"):
        ModelRecord.from_dict(legacy, "best/model.json")
    old_row = {k: v for k, v in row(1).to_dict().items() if k != "schema_version"}
    with pytest.raises(TrainerError, match="ncore-train migrate RUN_DIR"):
        EpochRow.from_dict(old_row)


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
    seed_dir.write_seed_record(SeedRecord(42, 3, 0.75, 4, 16))
    assert seed_dir.finished
    assert seed_dir.seed_record() == SeedRecord(42, 3, 0.75, 4, 16)
    # A run folder of the layout before version 1 marked a finished seed with its test
    # record: refused (not trained again over its model) until migrated.
    write_json(seed_dir.path / "test_metrics.json", {"seed": 42, "best_epoch": 2})
    with pytest.raises(TrainerError, match="ncore-train migrate"):
        assert seed_dir.finished


def test_not_a_run_folder_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(TrainerError, match="not a run folder"):
        RunDir(tmp_path).read_record()


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
        with pytest.raises(ManifestError, match="'test' is not in the manifest") as error:
            attempt()
        assert "\n" not in str(error.value)


# ----- every run file is read through a typed reader (issue 22, section 4) ------------------
def _evaluated_run(tmp_path: Path) -> RunDir:
    """A run folder holding one seed's evaluation.json, test_embeddings.npz and the
    summary.json over it, as ``ncore-train evaluate`` writes them."""
    from trainer.summary import seed_record, summarize, summary_markdown

    y = np.array([0, 0, 1, 1, 2, 2])
    probe = {"balanced_accuracy": 0.5, "chance": 0.5, "classes": 2, "samples": 6}
    record = seed_record(
        7, ["calm", "angry", "sad"], ["S1", "S2"], y, y % 2, y, y % 2, {"finetuned": {"adv": probe}}
    )
    run = RunDir(tmp_path / "run")
    seed = run.seed(7)
    seed.path.mkdir(parents=True)
    seed.write_evaluation(record)
    summary = summarize([record], {"run": "run", "dataset": "d"})
    run.write_summary(summary, summary_markdown(summary))
    np.savez(
        seed.embeddings,
        clip_ids=np.array([f"c{i}" for i in range(6)]),
        y_task=y,
        y_adv=y % 2,
        embeddings=np.ones((6, 4), np.float32),
        backbone_embeddings=np.zeros((6, 4), np.float32),
    )
    return run


def test_evaluated_run_files_read_back(tmp_path) -> None:
    run = _evaluated_run(tmp_path)
    summary = run.read_summary()
    assert summary.seeds == (7,) and summary.info.dataset == "d"
    evaluation = run.seed(7).read_evaluation()
    assert evaluation.seed == 7 and evaluation.probe_score("finetuned", "adv") == 0.5
    assert evaluation.confusion_matrix == ((2, 0, 0), (0, 2, 0), (0, 0, 2))
    arrays = run.seed(7).read_embeddings()
    assert arrays["embeddings"].shape == (6, 4) and str(arrays["clip_ids"][0]) == "c0"


SUMMARY_DAMAGE = {
    "a list": (lambda d: [], "expected a JSON object, got a list"),
    "null": (lambda d: None, "expected a JSON object, got null"),
    "version 9": (lambda d: {**d, "schema_version": 9}, "schema_version 9 is not supported"),
    "version true": (lambda d: {**d, "schema_version": True}, "schema_version True is not"),
    "version 1.0": (lambda d: {**d, "schema_version": 1.0}, "schema_version 1.0 is not"),
    "version null": (lambda d: {**d, "schema_version": None}, "schema_version None is not"),
    "mean a string": (
        lambda d: {
            **d,
            "metrics": {**d["metrics"], "accuracy": {**d["metrics"]["accuracy"], "mean": "high"}},
        },
        "'metrics.accuracy.mean' must be a number",
    ),
    "seeds a string": (lambda d: {**d, "seeds": "7"}, "'seeds' must be a non-empty list"),
    "chance a string": (
        lambda d: {**d, "chance": "low"},
        "'chance': expected a JSON object, got a string",
    ),
    "chance.adv a string": (
        lambda d: {**d, "chance": {"adv": "low"}},
        "'chance.adv' must be a number",
    ),
}


@pytest.mark.parametrize("how", sorted(SUMMARY_DAMAGE))
def test_a_damaged_summary_is_one_line_naming_the_file(tmp_path, how) -> None:
    """summary.json = [] was a traceback in the report; schema_version 9 was read as 1."""
    run = _evaluated_run(tmp_path)
    damage, message = SUMMARY_DAMAGE[how]
    write_json(run.summary_json, damage(json.loads(run.summary_json.read_text())))
    with pytest.raises(TrainerError, match=r"summary\.json: .*" + message.replace("(", r"\(")):
        run.read_summary()
    from click.testing import CliRunner

    from trainer.cli import main

    result = CliRunner().invoke(main, ["report", str(run.path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "summary.json" in result.output


EVALUATION_DAMAGE = {
    "a list": (lambda d: [], "expected a JSON object, got a list"),
    "version true": (lambda d: {**d, "schema_version": True}, "schema_version True"),
    "seed a string": (lambda d: {**d, "seed": "7"}, "'seed' must be an integer"),
    "metric a string": (
        lambda d: {**d, "metrics": {**d["metrics"], "uar": "good"}},
        "'metrics.uar' must be a number",
    ),
    "matrix ragged": (lambda d: {**d, "confusion_matrix": [[1]]}, "'confusion_matrix' must be"),
    "labels missing": (lambda d: {k: v for k, v in d.items() if k != "labels"}, "'labels'"),
    "clip ids short": (
        lambda d: {**d, "clips": {"ids": ["a"], "y_task": [0, 1]}},
        "'clips.y_task' must be a list of 1 integers",
    ),
}


@pytest.mark.parametrize("how", sorted(EVALUATION_DAMAGE))
def test_a_damaged_evaluation_record_is_one_line_naming_the_file(tmp_path, how) -> None:
    run = _evaluated_run(tmp_path)
    seed = run.seed(7)
    damage, message = EVALUATION_DAMAGE[how]
    write_json(seed.evaluation, damage(json.loads(seed.evaluation.read_text())))
    with pytest.raises(TrainerError, match=r"evaluation\.json: .*" + message):
        seed.read_evaluation()


def _replace_array(path: Path, name: str, value: np.ndarray) -> None:
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(path, **{**arrays, name: value})


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_with_object_array(path: Path) -> None:
    np.savez(
        path,
        clip_ids=np.array(["a", "b"], dtype=object),  # pickled on save
        y_task=np.array([0, 1]),
        y_adv=np.array([0, 1]),
        embeddings=np.ones((2, 3), np.float32),
        backbone_embeddings=np.ones((2, 3), np.float32),
    )


EMBEDDINGS_DAMAGE = {
    "0 bytes": (lambda p: p.write_bytes(b""), "unreadable test embeddings"),
    "truncated": (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "unreadable test embeddings",
    ),
    "an object array": (_npz_with_object_array, "unreadable test embeddings"),
    "a float label": (
        lambda p: _replace_array(p, "y_task", np.zeros(6, "float64")),
        "array 'y_task' has dtype float64",
    ),
    "missing rows": (
        lambda p: _replace_array(p, "embeddings", np.ones((5, 4), "float32")),
        "array 'embeddings' has 5 rows for 6 clip ids",
    ),
    "one array, not an archive": (
        lambda p: p.write_bytes(_npy_bytes(np.ones(3))),
        "not an .npz archive",
    ),
}


@pytest.mark.parametrize("how", sorted(EMBEDDINGS_DAMAGE))
def test_damaged_test_embeddings_are_one_line_and_never_unpickled(tmp_path, how) -> None:
    run = _evaluated_run(tmp_path)
    seed = run.seed(7)
    damage, message = EMBEDDINGS_DAMAGE[how]
    damage(seed.embeddings)
    with pytest.raises(TrainerError, match=r"test_embeddings\.npz: .*" + message) as caught:
        seed.read_embeddings()
    assert "\n" not in str(caught.value)


def test_counters_of_run_records_are_in_range_and_versions_are_integers(tmp_path) -> None:
    with pytest.raises(TrainerError, match="'epoch' must be an integer >= 1, got 0"):
        ModelRecord.from_dict({**MODEL.to_dict(), "epoch": 0})
    with pytest.raises(TrainerError, match="'step' must be an integer >= 0, got -5"):
        EpochRow.from_dict({**row(1).to_dict(), "step": -5})
    seed = SeedRecord(seed=1, best_epoch=3, val_acc_task=0.5, last_epoch=5, steps=20)
    with pytest.raises(TrainerError, match="'steps' must be an integer >= 0"):
        SeedRecord.from_dict({**seed.to_dict(), "steps": -1})
    for version in (True, 1.0):  # equal to 1 in Python, but not the version
        with pytest.raises(TrainerError, match=r"schema_version .* not supported"):
            ModelRecord.from_dict({**MODEL.to_dict(), "schema_version": version})
    # split.json holding a list: one line, not an AttributeError.
    seed_dir = RunDir(tmp_path).seed(1)
    seed_dir.path.mkdir()
    seed_dir.split_path.write_text("[]")
    with pytest.raises(TrainerError, match=r"split\.json: expected a JSON object, got a list"):
        seed_dir.read_split()


def test_a_metrics_file_that_is_not_utf8_is_one_line(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"epoch": 1}\n\xff\xfe\n')
    with pytest.raises(TrainerError, match=r"metrics\.jsonl: unreadable"):
        read_epoch_rows(path)
    path.write_text("[" * 100000 + "\n")
    with pytest.raises(TrainerError, match=r"metrics\.jsonl:1: not a JSON row"):
        read_epoch_rows(path)


def test_a_fifo_in_place_of_a_run_file_is_refused_without_blocking(tmp_path) -> None:
    run = _evaluated_run(tmp_path)
    for path, read in (
        (run.summary_json, run.read_summary),
        (run.seed(7).evaluation, run.seed(7).read_evaluation),
        (run.seed(7).metrics, lambda: read_epoch_rows(run.seed(7).metrics)),
    ):
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        with pytest.raises(TrainerError, match="is a FIFO, not a regular file"):
            read()


# ----- typed evaluation records and `ncore-train migrate` (issue 20) ---------------------------
def test_evaluation_summary_and_probe_records_round_trip_key_for_key(tmp_path) -> None:
    """What a record writes is what it reads: the same record, and the same JSON again."""
    from trainer.records import EvaluationRecord, ProbeReport, SummaryRecord
    from trainer.summary import probe_summary

    run = _evaluated_run(tmp_path)
    for path, cls in (
        (run.seed(7).evaluation, EvaluationRecord),
        (run.summary_json, SummaryRecord),
    ):
        data = json.loads(path.read_text())
        record = cls.from_dict({k: v for k, v in data.items() if k != "schema_version"}, "x")
        assert json.dumps({"schema_version": 1, **record.to_dict()}) == json.dumps(data)
    probe = {"balanced_accuracy": 0.75, "chance": 0.5, "classes": 2}
    keys = ("finetuned_task", "finetuned_adv", "backbone_task", "backbone_adv")
    report = probe_summary(
        [{"seed": s} | {k: {**probe, "balanced_accuracy": 0.25 * s} for k in keys} for s in (1, 2)],
        dict(run="r", manifest="m.json", clips=4, train_clips=8, failed={}, task="t",
             adversarial_label="a"),
    )  # fmt: skip
    assert report.probes["finetuned_adv"].mean == 0.375  # mean of 0.25 and 0.5
    run.write_probe_report("m.json", report, "# x\n")
    assert run.read_probe_report("m.json") == report
    assert json.loads(run.probe_files("m.json")[0].read_text())["schema_version"] == 1
    assert ProbeReport.from_dict(report.to_dict(), "p") == report


def _old_run_folder(root: Path) -> RunDir:
    """A run folder of the layout before versioned records (docs/CONTRACTS.md, "Run
    folder"): no ``schema_version`` anywhere, a finished seed marked by
    ``test_metrics.json``, which also holds its test record (no ``evaluation.json``)."""
    from trainer.config import TrainConfig

    run = RunDir(root / "old")
    seed = run.path / "seed-3"
    (seed / "best").mkdir(parents=True)
    config = {**TrainConfig(manifest="m.json", seeds=(3,)).to_dict(), "resolved_views": 2}
    (run.path / "config.json").write_text(json.dumps({**config, "view_set": "k"}))
    model = {
        "epoch": 2, "val_acc_task": 0.5, "seed": 3, "task": "emotion",
        "task_names": ["calm", "angry"], "adv_names": ["S1", "S2"],
        "dropout": 0.1, "grl_alpha": 1.0, "adversary": True,
    }  # fmt: skip
    (seed / "best" / "model.json").write_text(json.dumps(model))
    rows = [
        {
            "epoch": e, "step": 2 * e, "lr": 0.001, "train_ce": 1.0 / e,
            "train_consistency": 0.01, "train_adv": 0.7, "train_acc_task": 0.5,
            "train_acc_adv": 0.5, "grl_alpha": 1.0, "val_acc_task": 0.5, "val_acc_adv": 0.5,
            "train_clips": 8, "seconds": 1.5,
        }
        for e in (1, 2)
    ]  # fmt: skip
    (seed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    probe = {"balanced_accuracy": 0.5, "fold_std": 0.1, "chance": 0.5, "classes": 2}
    test_metrics = {
        "seed": 3, "test_clips": 4, "labels": {"task": ["calm", "angry"], "adv": ["S1", "S2"]},
        "metrics": {"accuracy": 0.75, "macro_f1": 0.7333, "uar": 0.75, "adv_head_accuracy": 0.5},
        "per_class": {
            "calm": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2},
            "angry": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
        },
        "confusion_matrix": [[1, 1], [0, 2]],
        "probes": {"finetuned": {"task": probe, "adv": probe}},
        "best_epoch": 2, "val_acc_task": 0.5,
    }  # fmt: skip
    (seed / "test_metrics.json").write_text(json.dumps(test_metrics))
    return run


def test_migrate_rewrites_an_old_run_folder_once_and_readers_then_accept_it(tmp_path) -> None:
    run = _old_run_folder(tmp_path)
    seed = run.seed(3)
    for read in (seed.model_record, lambda: read_epoch_rows(seed.metrics), lambda: seed.finished):
        with pytest.raises(TrainerError, match=r"no schema_version|ncore-train migrate") as error:
            read()
        assert "ncore-train migrate RUN_DIR" in str(error.value)
        assert "\n" not in str(error.value)
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ncore-train"), "migrate", str(run.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    rewritten = {Path(line.split(" ", 1)[1]).name for line in result.stdout.splitlines()}
    assert rewritten == {"model.json", "metrics.jsonl", "evaluation.json", "training.json"} | {
        "test_metrics.json"
    }
    assert not (seed.path / "test_metrics.json").exists()
    assert seed.finished and seed.seed_record() == SeedRecord(3, 2, 0.5, None, None)
    assert seed.model_record() == ModelRecord(2, 0.5, 3, "emotion", ("calm", "angry"), ("S1", "S2"))
    assert [r.train_ce for r in read_epoch_rows(seed.metrics)] == [1.0, 0.5]
    evaluation = seed.read_evaluation()
    assert evaluation.metrics["accuracy"] == 0.75 and evaluation.best_epoch == 2
    assert evaluation.per_class["angry"].support == 2 and evaluation.clips is None
    # Every file is now JSON with the version first (rows: last), and a second run is a no-op.
    assert next(iter(json.loads(seed.evaluation.read_text()))) == "schema_version"
    assert list(json.loads(seed.metrics.read_text().splitlines()[0]))[-1] == "schema_version"
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert run_migrate(run) == []
    assert before == {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}


def run_migrate(run: RunDir) -> list[Path]:
    from trainer.rundir import migrate_run

    return migrate_run(run.path)


def test_migrate_refuses_an_unknown_version_and_a_record_it_cannot_read(tmp_path) -> None:
    run = _old_run_folder(tmp_path)
    model = run.seed(3).model_record_path
    model.write_text(json.dumps({**json.loads(model.read_text()), "schema_version": 7}))
    with pytest.raises(TrainerError, match=r"model.json: schema_version 7 is not supported"):
        run_migrate(run)
    model.write_text(json.dumps({"epoch": 0}))
    with pytest.raises(TrainerError, match=r"model.json: missing field"):
        run_migrate(run)
    assert (run.seed(3).path / "test_metrics.json").exists()  # nothing after it was touched


# ----- the run folder of a real ncore-train (regressions of issue 13) ----------------------------
# Before the fix two trainings into one folder both exited 0 with mixed files, a folder holding
# another config was overwritten and ``--resume`` after the manifest's splits changed trained
# on new test clips. The runs are real tiny ones (tests/conftest.py, ``trained_copy``).
TRAIN = (sys.executable, "-m", "trainer.cli")


@pytest.mark.slow
def test_a_second_training_into_a_folder_in_use_is_refused(trained_copy):
    out = trained_copy / "runs" / "busy"
    with RunDir(out).lock():  # what a running ncore-train holds
        refused = subprocess.run(
            [*TRAIN, *toy_train_args(trained_copy, "--out", str(out))],
            capture_output=True,
            text=True,
            timeout=600,
        )
    line = process_error(refused)
    assert "in use by `ncore-train`" in line and str(out) in line
    assert not (out / "config.json").exists() and not list(out.glob("seed-*"))


@pytest.mark.slow
def test_a_folder_holding_another_config_is_refused_unless_resumed_with_the_same(trained_copy):
    run = trained_copy / "runs" / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    runner = CliRunner()
    for extra in (["--lr", "2e-3"], ["--lr", "2e-3", "--resume"], ["--views", "0"]):
        line = one_line_error(
            runner.invoke(main, toy_train_args(trained_copy, "--out", str(run), *extra))
        )
        assert f"{run} holds a run of another config" in line, line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing written into the other run's folder
    same = runner.invoke(main, toy_train_args(trained_copy, "--out", str(run), "--resume"))
    assert same.exit_code == 0, same.output  # the same run: its finished seed is kept


@pytest.mark.slow
def test_resume_refuses_a_manifest_whose_splits_changed(trained_copy):
    manifest = trained_copy / "corpus" / "manifest.json"
    data = json.loads(manifest.read_text())
    train = next(c for c in data["clips"] if c["split"] == "train")
    test = next(c for c in data["clips"] if c["split"] == "test")
    train["split"], test["split"] = "test", "train"  # same clips, same view set key
    manifest.write_text(json.dumps(data))
    Manifest.load(manifest)  # still a valid manifest
    run = trained_copy / "runs" / "r"
    line = one_line_error(
        CliRunner().invoke(main, toy_train_args(trained_copy, "--out", str(run), "--resume"))
    )
    assert "splits or labels changed" in line
    # A run folder written before splits were recorded: the checkpoint still knows them.
    config = json.loads((run / "config.json").read_text())
    del config["splits"]
    (run / "config.json").write_text(json.dumps(config))
    (run / "seed-1" / "training.json").unlink()  # as if killed after its last checkpoint
    line = one_line_error(
        CliRunner().invoke(main, toy_train_args(trained_copy, "--out", str(run), "--resume"))
    )
    assert "other splits or labels" in line and "checkpoint" in line
