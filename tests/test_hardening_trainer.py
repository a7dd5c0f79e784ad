"""Hardening (issue 13): ``ncore-train`` refuses, in one line, what it used to mix, crash on or
accept silently.

Before the fix: two trainings into one folder both exited 0 with mixed files; a folder
holding another config was overwritten; ``--resume`` after the manifest's splits changed
trained on new test clips; a damaged checkpoint, a full disk or a config value of the wrong
type gave a traceback (``epochs = true`` was accepted as 1); a task with one class trained
to "accuracy 1.0"; a run whose test clips all failed perturbation trained to the end and
then crashed. Everything here is real: toy corpora in real Zarr shards, the tiny backbone,
the real command line (in-process, or a real process where locks and limits matter).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.manifest import Clip, Failure, Manifest
from pipeline.rng import make_rng
from pipeline.shards import ShardClip, write_view_set
from pipeline.testing.toy import EMOTION_F0, EMOTIONS, SPEAKERS, tone, write_trainer_corpus
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.rundir import RunDir

pytestmark = pytest.mark.slow

OPTIONS = [
    "--backbone", "tiny", "--lr", "1e-3", "--epochs", "1", "--seeds", "1",
    "--batch-size", "8", "--max-seconds", "0.3", "--device", "cpu",
]  # fmt: skip
TRAIN = (sys.executable, "-m", "trainer.cli")


def one_line_error(result) -> str:
    """The CLI's error line; asserts there is exactly one and no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def process_error(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, completed.stderr
    return errors[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A toy corpus and one finished run ``runs/r`` trained on it."""
    root = tmp_path_factory.mktemp("hardening-train")
    manifest = write_trainer_corpus(root / "corpus", n_clips=24, views=1, shard_size=8)
    result = CliRunner().invoke(
        main, ["--manifest", str(manifest), *OPTIONS, "--out", str(root / "runs" / "r")]
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    """A private copy of the project (corpus and run); the run's config names its manifest."""
    shutil.copytree(project / "corpus", tmp_path / "corpus")
    shutil.copytree(project / "runs", tmp_path / "runs")
    manifest = str(tmp_path / "corpus" / "manifest.json")
    run = tmp_path / "runs" / "r"
    for path in [run / "config.json", *run.rglob("state.json")]:
        data = json.loads(path.read_text())
        (data["config"] if "config" in data else data)["manifest"] = manifest
        path.write_text(json.dumps(data))
    return tmp_path


def _args(root: Path, *extra: str) -> list[str]:
    return ["--manifest", str(root / "corpus" / "manifest.json"), *OPTIONS, *extra]


# ----- the run folder ------------------------------------------------------------------------
def test_a_second_training_into_a_folder_in_use_is_refused(copy):
    out = copy / "runs" / "busy"
    with RunDir(out).lock():  # what a running ncore-train holds
        refused = subprocess.run(
            [*TRAIN, *_args(copy, "--out", str(out))], capture_output=True, text=True, timeout=600
        )
    line = process_error(refused)
    assert "in use by `ncore-train`" in line and str(out) in line
    assert not (out / "config.json").exists() and not list(out.glob("seed-*"))


def test_a_folder_holding_another_config_is_refused_unless_resumed_with_the_same(copy):
    run = copy / "runs" / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    runner = CliRunner()
    for extra in (["--lr", "2e-3"], ["--lr", "2e-3", "--resume"], ["--views", "0"]):
        line = one_line_error(runner.invoke(main, _args(copy, "--out", str(run), *extra)))
        assert f"{run} holds a run of another config" in line, line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing written into the other run's folder
    same = runner.invoke(main, _args(copy, "--out", str(run), "--resume"))
    assert same.exit_code == 0, same.output  # the same run: its finished seed is kept


def test_resume_refuses_a_manifest_whose_splits_changed(copy):
    manifest = copy / "corpus" / "manifest.json"
    data = json.loads(manifest.read_text())
    train = next(c for c in data["clips"] if c["split"] == "train")
    test = next(c for c in data["clips"] if c["split"] == "test")
    train["split"], test["split"] = "test", "train"  # same clips, same view set key
    manifest.write_text(json.dumps(data))
    Manifest.load(manifest)  # still a valid manifest
    run = copy / "runs" / "r"
    line = one_line_error(CliRunner().invoke(main, _args(copy, "--out", str(run), "--resume")))
    assert "splits or labels changed" in line
    # A run folder written before splits were recorded: the checkpoint still knows them.
    config = json.loads((run / "config.json").read_text())
    del config["splits"]
    (run / "config.json").write_text(json.dumps(config))
    (run / "seed-1" / "training.json").unlink()  # as if killed after its last checkpoint
    line = one_line_error(CliRunner().invoke(main, _args(copy, "--out", str(run), "--resume")))
    assert "other splits or labels" in line and "checkpoint" in line


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "truncated weights": lambda c: _truncate(c / "model.safetensors"),
    "truncated optimizer": lambda c: _truncate(c / "optim.pt"),
    "garbled state": lambda c: (c / "state.json").write_text('{"schema_version": 1, "seed": "x"'),
    "state fields missing": lambda c: (c / "state.json").write_text('{"schema_version": 1}'),
    "negative step": lambda c: _edit_state(c, step=-5),
    "best epoch after the checkpoint": lambda c: _edit_state(c, best_epoch=99),
}


def _edit_state(checkpoint: Path, **changes) -> None:
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**state, **changes}))


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_on_resume(copy, how):
    run = copy / "runs" / "r"
    (run / "seed-1" / "training.json").unlink()  # as if killed after its last checkpoint
    checkpoint = next((run / "seed-1" / "checkpoint").iterdir())
    DAMAGE[how](checkpoint)
    line = one_line_error(CliRunner().invoke(main, _args(copy, "--out", str(run), "--resume")))
    assert f"checkpoint {checkpoint}" in line and "damaged" in line


# ----- the config ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('lr = "fast"', "lr"),
        ("epochs = 1.5", "epochs"),
        ("epochs = true", "epochs"),
        ("seeds = [1.5]", "seeds"),
        ('batch-size = "16"', "batch_size"),
        ("dropout = nan", "dropout"),
        ("adversary = 1", "adversary"),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line(copy, text, field):
    config = copy / "run.toml"
    config.write_text(text + "\n")
    manifest = str(copy / "corpus" / "manifest.json")
    args = ["--config", str(config), "--manifest", manifest, "--backbone", "tiny"]
    line = one_line_error(CliRunner().invoke(main, [*args, "--out", str(copy / "x")]))
    assert field in line
    assert not (copy / "x").exists()


def test_config_types_accept_what_they_should():
    config = TrainConfig.from_dict({"manifest": "m.json", "lr": 1, "seeds": "1, 2", "views": None})
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.seeds == (1, 2)
    with pytest.raises(TrainerError, match="config: field 'epochs' must be an integer, got True"):
        TrainConfig.from_dict({"manifest": "m.json", "epochs": True})


# ----- the corpus, checked before training -----------------------------------------------------
def _corpus(folder: Path, *, train_emotions=(0, 1, 2), failed_split: str | None = None) -> Path:
    """24 toy clips; training clips only of ``train_emotions``; the clips of
    ``failed_split`` recorded as perturbation failures of the view set (not stored)."""
    splits = ["train", "train", "val", "test"]
    clips, stored = [], []
    for c in range(24):
        split = splits[c % 4]
        emotion = train_emotions[c % len(train_emotions)] if split == "train" else c % 3
        speaker = (c // 3) % 4
        rng = make_rng("hardening", c)
        audio = np.stack(
            [tone(EMOTION_F0[emotion], 0.5 + 0.4 * speaker, 0.3, 4000, rng) for _ in range(2)]
        )
        clip = Clip(f"c{c:02d}", f"c{c:02d}.wav", EMOTIONS[emotion], SPEAKERS[speaker], split,
                    4000, 16000, 1)  # fmt: skip
        clips.append(clip)
        if split != failed_split:
            stored.append(ShardClip(clip.id, audio, [{}]))
    path = folder / "manifest.json"
    view_set = write_view_set(
        folder / "cache" / "toy" / "speaker-n1-test",
        stored,
        manifest_path=path,
        kind="speaker",
        views=1,
        seed=1,
        key="test",
        shard_size=8,
        code_version="test",
    )
    failures = tuple(
        Failure(c.id, "perturb", "too short for WORLD: 4000 samples", c.path)
        for c in clips
        if c.split == failed_split
    )
    Manifest(
        dataset="toy",
        source="test",
        data_dir=".",
        labels={"emotion": EMOTIONS, "speaker": SPEAKERS},
        clips=tuple(clips),
        view_sets=(replace(view_set, failures=failures),),
    ).save(path)
    return path


@pytest.mark.parametrize(
    ("corpus", "message"),
    [
        ({"train_emotions": (1,)}, "stores training clips of 1 emotion class(es) (joy)"),
        ({"failed_split": "test"}, "every test clip (6) failed perturbation"),
        ({"failed_split": "val"}, "every val clip (6) failed perturbation"),
    ],
)
def test_a_corpus_that_cannot_give_a_result_is_refused_before_training(tmp_path, corpus, message):
    manifest = _corpus(tmp_path / "corpus", **corpus)
    out = tmp_path / "run"
    # The stored split is the one built to fail (every seed drawing its own split would
    # spread the failed clips over train, val and test).
    result = CliRunner().invoke(
        main, ["--manifest", str(manifest), *OPTIONS, "--fixed-split", "--out", str(out)]
    )
    assert message in one_line_error(result)
    assert not out.exists()  # refused before anything was trained or written


# ----- the disk ------------------------------------------------------------------------------
def _limited(limit_bytes: int):
    def apply() -> None:  # in the child: files cannot grow beyond limit_bytes (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(copy):
    out = copy / "runs" / "full"
    full = subprocess.run(
        [*TRAIN, *_args(copy, "--out", str(out))],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limited(64 * 1024),  # the config fits, the first checkpoint does not
    )
    assert "File too large" in process_error(full)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".best.")]
    embeddings = copy / "emb" / "e.npz"
    run = copy / "runs" / "r"
    embed = subprocess.run(
        [
            *(*TRAIN, "embed", "--run", str(run)),
            *("--manifest", str(copy / "corpus" / "manifest.json"), "--out", str(embeddings)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limited(2 * 1024),
    )
    assert "File too large" in process_error(embed)
    assert not embeddings.parent.exists() or not list(embeddings.parent.iterdir())
    blocked = subprocess.run(
        [*TRAIN, *_args(copy, "--out", str(copy / "corpus" / "manifest.json" / "run"))],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "manifest.json" in process_error(blocked)  # a folder that cannot be created


def test_run_files_follow_the_umask(project, tmp_path):
    out = tmp_path / "shared"
    done = subprocess.run(
        [*TRAIN, *_args(project, "--out", str(out))],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert done.returncode == 0, done.stderr
    for path in [out, *out.rglob("*")]:
        if path.name == ".lock":
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o750 if path.is_dir() else 0o640
        assert mode == want, (path, oct(mode))


def test_shards_another_manifest_wrote_into_the_same_cache_folder_are_refused(tmp_path):
    # Two synthetic corpora under one dataset name: the same clip ids and settings give the
    # same view-set key, so perturbing the second rewrites the first's cache folder. Before
    # the fix, training on the first read the second's audio and exited 0.
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    paths = []
    for tag, generator_seed in (("a", 0), ("b", 1)):
        path = tmp_path / "manifests" / f"{tag}.json"
        manifest, _ = build_manifest(
            "synthetic", tmp_path / "data" / tag, "same-name", seed=42, manifest_path=path,
            clips=12, synthetic_seed=generator_seed,
        )  # fmt: skip
        # As written before source checksums were recorded: one key for both corpora (with
        # checksums the keys differ: tests/test_viewset.py), so one folder, and the reader's
        # check (pipeline.shards.open_shard) is what refuses the other corpus's shards.
        manifest = dataclasses.replace(
            manifest,
            clips=tuple(dataclasses.replace(c, source_sha256="") for c in manifest.clips),
        )
        save_manifest_keeping_views(manifest, path)
        paths.append(path)
    first, second = (Manifest.load(p) for p in paths)
    assert [c.id for c in first.clips] == [c.id for c in second.clips]
    assert [c.num_samples for c in first.clips] != [c.num_samples for c in second.clips]
    settings = PerturbSettings(kinds=("speaker",), views=1, f0_method="dio", shard_size=12)
    with ThreadPoolExecutor(2) as pool:
        for path in paths:
            run_perturb(path, settings, fixed_executor(pool), tmp_path / "cache", progress=False)
    keys = [Manifest.load(p).view_sets[0].key for p in paths]
    assert keys[0] == keys[1]  # one cache folder for both
    result = CliRunner().invoke(
        main,
        ["--manifest", str(paths[0]), *OPTIONS, "--views", "1", "--out", str(tmp_path / "run")],
    )
    line = one_line_error(result)
    assert "does not belong to this manifest" in line and "--name" in line
