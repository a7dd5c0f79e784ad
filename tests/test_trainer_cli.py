"""``ncore-train``: one-line errors for user mistakes, config files, the command group."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from pipeline.testing.processes import file_size_limit, process_error
from pipeline.testing.toy import toy_train_args, write_trainer_corpus
from trainer.cli import main
from trainer.rundir import RunDir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_trainer_corpus(tmp_path_factory.mktemp("cli"), n_clips=24, views=2)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line_error(result) -> str:
    """The error line; asserts exit code 1 and no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    return last


def base(corpus, tmp_path, *extra: str) -> list[str]:
    return [
        "--manifest",
        str(corpus),
        "--backbone",
        "tiny",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
        *extra,
    ]


def test_manifest_without_the_needed_view_kind(corpus, tmp_path) -> None:
    # The speaker task needs emotion-perturbed views; the corpus has speaker views only.
    line = one_line_error(run(*base(corpus, tmp_path, "--task", "speaker")))
    assert "no emotion view set" in line


def test_fewer_stored_views_than_asked(corpus, tmp_path) -> None:
    line = one_line_error(run(*base(corpus, tmp_path, "--views", "5")))
    assert "5 speaker views asked for" in line and "at most 2" in line


def test_backbone_that_cannot_be_loaded_offline(corpus, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = base(corpus, tmp_path)
    args[args.index("tiny")] = "no-such-org/no-such-model"
    line = one_line_error(run(*args))
    assert "--backbone PATH" in line and "--backbone tiny" in line
    args[args.index("no-such-org/no-such-model")] = str(tmp_path / "missing-folder")
    line = one_line_error(run(*args))
    assert "--backbone PATH" in line and "missing-folder" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU error")
def test_cuda_asked_for_but_absent(corpus, tmp_path) -> None:
    args = base(corpus, tmp_path)
    args[args.index("cpu")] = "cuda"
    line = one_line_error(run(*args))
    assert "--device cuda" in line and "no CUDA" in line


def test_missing_manifest_and_bad_manifest(tmp_path) -> None:
    line = one_line_error(run("--manifest", str(tmp_path / "nope.json"), "--backbone", "tiny"))
    assert "no such manifest" in line
    result = run("--backbone", "tiny")
    assert result.exit_code == 2 and "--manifest" in result.stderr


def test_a_pipeline_error_inside_ncore_train_is_one_line_and_exit_1(corpus, tmp_path) -> None:
    """One error root: the manifest reader's own ManifestError (a pipeline error, not
    re-raised as a TrainerError) reaches the user of the real command as one line."""
    from pipeline.errors import PipelineError
    from pipeline.manifest import ManifestError
    from trainer.config import TrainConfig
    from trainer.errors import TrainerError
    from trainer.plan import plan_run

    data = json.loads(corpus.read_text(encoding="utf-8"))
    bad = tmp_path / "future.json"
    bad.write_text(json.dumps({**data, "schema_version": 7}), encoding="utf-8")
    with pytest.raises(ManifestError) as raised:
        plan_run(TrainConfig(manifest=str(bad), backbone="tiny", device="cpu"))
    assert isinstance(raised.value, PipelineError)
    assert not isinstance(raised.value, TrainerError)
    args = base(corpus, tmp_path)
    args[args.index("--manifest") + 1] = str(bad)
    done = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"Error: {bad}: manifest: schema_version 7 is not supported (this toolkit reads version 1)"
    ]


@pytest.mark.slow
def test_config_file_then_resume_under_another_config_is_refused(corpus, tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("lr = 0.5\nlambda-reg = 0.02\ndropout = 0.2\n")
    first = run(*base(corpus, tmp_path, "--config", str(config)))
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lr"] == 1e-3  # the option overrides the file
    assert saved["lambda_reg"] == 0.02 and saved["dropout"] == 0.2  # the file overrides defaults
    assert "test accuracy" in first.stdout

    # The finished seed's checkpoint was written with lambda_reg 0.02: resuming without the
    # config file (lambda_reg back at its default) must refuse.
    RunDir(tmp_path / "run").seed(1).record_path.unlink()
    line = one_line_error(run(*base(corpus, tmp_path, "--resume")))
    assert "another config" in line and "lambda_reg" in line


@pytest.mark.slow
def test_dann_grl_schedule_is_logged_per_epoch_and_pinned_on_resume(corpus, tmp_path) -> None:
    args = base(corpus, tmp_path, "--grl-schedule", "dann", "--grl-alpha", "0.5")
    args[args.index("--epochs") + 1] = "2"
    result = run(*args)
    assert result.exit_code == 0, result.output
    seed_dir = tmp_path / "run" / "seed-1"
    rows = [json.loads(x) for x in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    # Expected: the mean of the ramp over each epoch's optimizer steps (one per batch here).
    train = json.loads((seed_dir / "split.json").read_text())["train"]  # seed 1's own split
    per_epoch = math.ceil(len(train) / 8)
    total = 2 * per_epoch
    ramp = [0.5 * (2 / (1 + math.exp(-10 * s / total)) - 1) for s in range(total)]
    for row, epoch_steps in zip(rows, (ramp[:per_epoch], ramp[per_epoch:]), strict=True):
        assert row["grl_alpha"] == pytest.approx(sum(epoch_steps) / per_epoch, rel=1e-9)
    assert 0 < rows[0]["grl_alpha"] < rows[1]["grl_alpha"] < 0.5

    RunDir(tmp_path / "run").seed(1).record_path.unlink()
    line = one_line_error(run(*base(corpus, tmp_path, "--resume", "--grl-alpha", "0.5")))
    assert "another config" in line and "grl_schedule" in line


def test_group_keeps_room_for_subcommands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for option in (
        "--manifest",
        "--views",
        "--grl-objective",
        "--grl-schedule",
        "--no-adversary",
        "--resume",
        "--max-seconds",
        "--gradient-checkpointing",
        "--freeze-feature-encoder",
    ):
        assert option in result.output


@pytest.mark.slow
def test_early_stopping_selects_the_best_epoch_and_stops_after_patience(corpus, tmp_path) -> None:
    # At lr 1e-12 the predictions cannot change, so validation accuracy never improves
    # after epoch 1: with patience 2 the run must stop after epoch 3 of 6 and test epoch 1.
    args = base(corpus, tmp_path, "--patience", "2")
    args[args.index("--epochs") + 1] = "6"
    args[args.index("--lr") + 1] = "1e-12"
    result = run(*args)
    assert result.exit_code == 0, result.output
    seed_dir = tmp_path / "run" / "seed-1"
    rows = [json.loads(x) for x in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert len({r["val_acc_task"] for r in rows}) == 1
    assert json.loads((seed_dir / "best" / "model.json").read_text())["epoch"] == 1
    assert RunDir(tmp_path / "run").seed(1).seed_record().best_epoch == 1
    assert RunDir(tmp_path / "run").seed(1).seed_record().last_epoch == 3
    assert json.loads((seed_dir / "evaluation.json").read_text())["best_epoch"] == 1


# ----- a full disk (a regression of issue 13: a traceback and temporary files left) -------------
# "Disk full" is a real limit on file size (RLIMIT_FSIZE: writes fail with EFBIG) set in a real
# child process.
TRAIN = (sys.executable, "-m", "trainer.cli")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(trained_copy):
    out = trained_copy / "runs" / "full"
    full = subprocess.run(
        [*TRAIN, *toy_train_args(trained_copy, "--out", str(out))],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=file_size_limit(64 * 1024),  # the config fits, the first checkpoint does not
    )
    assert "File too large" in process_error(full)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".best.")]
    embeddings = trained_copy / "emb" / "e.npz"
    run = trained_copy / "runs" / "r"
    embed = subprocess.run(
        [
            *(*TRAIN, "embed", "--run", str(run)),
            *(
                "--manifest",
                str(trained_copy / "corpus" / "manifest.json"),
                "--out",
                str(embeddings),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=file_size_limit(2 * 1024),
    )
    assert "File too large" in process_error(embed)
    assert not embeddings.parent.exists() or not list(embeddings.parent.iterdir())
    blocked = subprocess.run(
        [
            *TRAIN,
            *toy_train_args(
                trained_copy, "--out", str(trained_copy / "corpus" / "manifest.json" / "run")
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "manifest.json" in process_error(blocked)  # a folder that cannot be created
