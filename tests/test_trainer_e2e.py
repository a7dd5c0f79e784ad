"""End-to-end training runs in real subprocesses: kill and resume, 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.testing.toy import write_trainer_corpus
from trainer.rundir import RunDir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    # Same thread count in every run: CPU kernels may sum in another order otherwise.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def train_command(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer.cli",
        "--manifest",
        str(manifest),
        "--backbone",
        "tiny",
        "--epochs",
        "4",
        "--seeds",
        "42",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--max-seconds",
        "0.4",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_trainer_corpus(tmp_path_factory.mktemp("corpus"), n_clips=48, views=2)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "seed-42" / "checkpoint" / "epoch-0004" / "model.safetensors"))


def metric_rows(run: Path) -> list[dict]:
    lines = (run / "seed-42" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final weights, metric rows (but the timing) and test metrics."""
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    assert [r["epoch"] for r in metric_rows(b)] == [1, 2, 3, 4]
    assert metric_rows(b) == metric_rows(a)
    test_a = json.loads((a / "seed-42" / "evaluation.json").read_text())
    test_b = json.loads((b / "seed-42" / "evaluation.json").read_text())
    assert test_a == test_b
    assert RunDir(a).seed(42).seed_record() == RunDir(b).seed(42).seed_record()


def kill_when(proc: subprocess.Popen, ready) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or it exits, or 300 s pass)."""
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for a file, not timing anything
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> Path:
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(train_command(corpus, out), env=env(), check=True, capture_output=True)
    return out


def test_kill_and_resume_gives_the_same_final_weights(corpus, straight, tmp_path) -> None:
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(
        train_command(corpus, resumed),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = resumed / "seed-42" / "checkpoint" / "epoch-0001" / "state.json"
    kill_when(proc, first.exists)
    # The kill landed after epoch 1 and before the run could finish.
    assert first.exists()
    assert not RunDir(resumed).seed(42).finished
    assert not (resumed / "seed-42" / "checkpoint" / "epoch-0004").exists()

    again = subprocess.run(
        train_command(corpus, resumed), env=env(), capture_output=True, text=True
    )
    assert again.returncode == 1 and "--resume" in again.stderr.strip().splitlines()[-1]

    subprocess.run(
        train_command(corpus, resumed, "--resume"), env=env(), check=True, capture_output=True
    )
    assert_same_run(straight, resumed)


def test_kill_inside_an_epoch_and_resume_gives_the_same_final_weights(
    corpus, straight, tmp_path
) -> None:
    resumed = tmp_path / "resumed"
    every_step = ("--checkpoint-every", "1")
    proc = subprocess.Popen(
        train_command(corpus, resumed, *every_step),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = resumed / "seed-42" / "checkpoint"
    kill_when(proc, lambda: any(folder.glob("epoch-0002-batch-*/state.json")))
    inside = [p.name for p in folder.glob("epoch-*-batch-*") if (p / "state.json").exists()]
    assert inside, "the kill should land inside an epoch"

    done = subprocess.run(
        train_command(corpus, resumed, "--resume", *every_step),
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    )
    assert "after" in done.stderr and "batches" in done.stderr  # it resumed mid-epoch
    assert_same_run(straight, resumed)


def test_finished_run_writes_test_metrics_and_a_loadable_backbone(corpus, tmp_path) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    out = tmp_path / "run"
    cmd = train_command(corpus, out)
    cmd[cmd.index("--epochs") + 1] = "2"
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    record = json.loads((out / "seed-42" / "evaluation.json").read_text())
    split = json.loads((out / "seed-42" / "split.json").read_text())  # the seed's own split
    assert record["test_clips"] == len(split["test"])
    assert record["clips"]["ids"] == split["test"]
    assert 0.0 <= record["metrics"]["uar"] <= 1.0
    rows = [json.loads(x) for x in (out / "seed-42" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in (
        "train_ce",
        "train_consistency",
        "train_adv",
        "train_acc_task",
        "train_acc_adv",
        "val_acc_task",
        "val_acc_adv",
    ):
        assert all(r[key] is not None for r in rows), key
    assert rows[0]["train_consistency"] > 0  # two stored views: the term is active

    backbone_dir = out / "seed-42" / "best" / "backbone"
    backbone = AutoModel.from_pretrained(backbone_dir).eval()
    extractor = AutoFeatureExtractor.from_pretrained(backbone_dir)
    assert extractor.return_attention_mask and extractor.do_normalize
    best = load_file(str(out / "seed-42" / "best" / "model.safetensors"))
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, best[f"backbone.{name}"]), name


def test_two_process_ddp_gloo_run_completes_an_epoch(corpus, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = train_command(corpus, out)
    cmd[cmd.index("--epochs") + 1] = "1"
    # 18 clips per rank in batches of 8: three micro-batches, so with accumulation over 2 the
    # epoch ends on a partial step that must still be synchronised (the loop checks that the
    # ranks' weights agree after every epoch). The checkpoint after step 1, inside the epoch,
    # gathers both ranks' generator states (a collective that must not hang).
    cmd += ["--grad-accum", "2", "--checkpoint-every", "1"]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    done = subprocess.run(
        launcher + cmd[1:], env=env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "seed-42" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    split = json.loads((out / "seed-42" / "split.json").read_text())  # the seed's own split
    train_clips = len(split["train"])
    # Both ranks' clips are counted (each rank gets train_clips // 2 of them).
    assert rows[0]["train_clips"] == 2 * (train_clips // 2)
    record = json.loads((out / "seed-42" / "evaluation.json").read_text())
    assert record["test_clips"] == len(split["test"])  # every test clip evaluated


def test_ddp_kill_inside_an_epoch_and_resume_matches_an_uninterrupted_ddp_run(
    corpus, tmp_path
) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc_per_node", "2"]

    def command(out: Path, *extra: str) -> list[str]:
        cmd = train_command(corpus, out, "--checkpoint-every", "1", *extra)
        cmd[cmd.index("--epochs") + 1] = "2"
        cmd[cmd.index("--batch-size") + 1] = "4"  # 5 batches per rank and epoch
        return launcher + cmd[1:]

    straight = tmp_path / "straight"
    done = subprocess.run(command(straight), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(
        command(resumed),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so that the kill reaches torchrun's workers too
    )
    folder = resumed / "seed-42" / "checkpoint"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(folder.glob("epoch-0002-batch-*/state.json")):
            break
        time.sleep(0.01)  # polling for a file, not timing anything
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(p.name.startswith("epoch-0002-batch-") for p in folder.iterdir())

    done = subprocess.run(command(resumed, "--resume"), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    last = "epoch-0002"
    a = load_file(str(straight / "seed-42" / "checkpoint" / last / "model.safetensors"))
    b = load_file(str(resumed / "seed-42" / "checkpoint" / last / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metric_rows(resumed) == metric_rows(straight)  # the epoch sums of both ranks
