"""Positive control, CI-sized (the full table: bench/positive_control.py, README).

On the synthetic ``premise`` preset the speaker lives only in cues the speaker
perturbation p_s randomises and the emotion only in cues it keeps; with strong
entanglement the speaker is a shortcut to the emotion, which the backbone-only baseline
takes. N-CORE (the paper's loss weights) must then carry less speaker information than the
baseline, measured on an independent corpus (speaker and emotion independent, no shared
clip) by a linear probe fitted on its training split and scored on its test split, while
keeping the emotion task. At full size it does not with the paper's loss weights (README,
"Positive control"), so the direction is an expected failure here, reported as XPASS the
day it holds; what must hold is asserted: the baseline has speaker information to remove,
N-CORE keeps the task, and p_s views of the probe corpus carry far less speaker information
than the originals in both models' embeddings (the perturbation is not what limits the
method here; how invariant training makes the encoder is). Everything is real: generated
WAVs, WORLD views in Zarr shards, ``ncore-train`` and ``ncore-train embed`` as
subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = 42
TRAIN = {"clips": 96, "speakers": 4, "emotions": 3, "entanglement": 0.9, "synthetic_seed": 0}
PROBE = {"clips": 120, "speakers": 4, "emotions": 3, "entanglement": 0.0, "synthetic_seed": 1}
EPOCHS = "4"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _corpora(root: Path) -> tuple[Path, Path]:
    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    paths = []
    for name, options, test_fraction in (("train", TRAIN, 0.2), ("probe", PROBE, 0.3)):
        path = root / "manifests" / f"{name}.json"
        manifest, _ = build_manifest(
            "synthetic",
            root / "data" / name,
            name,
            seed=SEED,
            manifest_path=path,
            preset="premise",
            test_fraction=test_fraction,
            **options,
        )
        save_manifest_keeping_views(manifest, path)
        paths.append(path)
    # p_s views of both: the training views, and the probe corpus's for the mechanism test.
    settings = PerturbSettings(kinds=("speaker",), views=2, f0_method="dio", shard_size=32)
    with ThreadPoolExecutor(2) as pool:
        for path in paths:
            run_perturb(path, settings, fixed_executor(pool), root / "cache", progress=False)
    return paths[0], paths[1]


def _train_and_probe(root: Path, train: Path, probe: Path, name: str, options: list[str]):
    """(test accuracy, speaker probe, emotion probe, speaker perturbation probe) of one run."""
    from pipeline.manifest import Manifest
    from trainer.embed import embed_views
    from trainer.plan import load_selected_model
    from trainer.probes import held_out_probe, perturbation_probe
    from trainer.rundir import RunDir

    run = root / "runs" / name
    command = [
        str(BIN / "ncore-train"), "--manifest", str(train), "--backbone", "tiny", "--lr", "1e-3",
        "--epochs", EPOCHS, "--patience", EPOCHS, "--max-seconds", "0.8", "--seeds", str(SEED),
        "--device", "cpu", "--out", str(run), *options,
    ]  # fmt: skip
    subprocess.run(command, check=True, env=_env(), capture_output=True)
    npz = run / "probe.npz"
    command = [
        str(BIN / "ncore-train"), "embed", "--run", str(run), "--manifest", str(probe),
        "--out", str(npz), "--device", "cpu",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=_env(), capture_output=True)
    data = np.load(npz)
    test = data["split"] == "test"
    probes = {}
    for label in ("speaker", "emotion"):
        names = sorted(set(data[label].tolist()))
        y = np.array([names.index(v) for v in data[label].tolist()])
        x = data["embeddings"]
        probes[label] = held_out_probe(x[~test], y[~test], x[test], y[test], seed=0)
    records = [run / f"seed-{SEED}" / n for n in ("evaluation.json", "test_metrics.json")]
    record = next(r for r in records if r.exists())
    accuracy = json.loads(record.read_text())["metrics"]["accuracy"]
    model, _ = load_selected_model(RunDir(run).seed(SEED))
    views = embed_views(model, probe, "speaker", 2, max_seconds=0.8)
    clips = Manifest.load(probe).clip_by_id()
    fit = np.array([clips[c].split != "test" for c in views.clip_ids])
    speaker = [clips[c].speaker for c in views.clip_ids]
    return (
        accuracy,
        probes["speaker"],
        probes["emotion"],
        perturbation_probe(views.views, speaker, fit),
    )


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    root = tmp_path_factory.mktemp("positive-control")
    train, probe = _corpora(root)
    baseline = _train_and_probe(
        root, train, probe, "baseline", ["--views", "0", "--no-adversary", "--lambda-reg", "0"]
    )
    ncore = _train_and_probe(root, train, probe, "ncore", ["--views", "2"])
    return baseline, ncore


@pytest.mark.slow
def test_there_is_speaker_information_to_remove_and_ncore_keeps_the_task(control):
    (base_acc, base_spk, _, _), (ncore_acc, _, _, _) = control
    # The baseline's embedding decodes the speaker of unseen clips well above chance (1/4):
    # the shortcut of the entangled corpus put it there.
    assert base_spk.balanced_accuracy > base_spk.chance + 0.15, base_spk
    # N-CORE keeps the task: within 10 points of the baseline's test accuracy.
    assert ncore_acc > base_acc - 0.10, (ncore_acc, base_acc)


@pytest.mark.slow
def test_speaker_perturbation_takes_the_speaker_out_of_what_the_encoder_sees(control):
    # The premise, seen through the baseline's own encoder on the independent corpus: a
    # probe reads the speaker from originals, but not from p_s views (fitted on views), and
    # a probe fitted on originals does not transfer to views. So what limits N-CORE there
    # is how invariant training makes the encoder, not what p_s leaves in the signal.
    (_, _, _, base), (_, _, _, ncore) = control
    for measured in (base, ncore):
        assert measured.originals > measured.chance + 0.15, measured
        assert measured.views < measured.originals - 0.15, measured
        assert measured.transfer < measured.originals - 0.15, measured


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured (README, Positive control): with the paper's loss weights N-CORE does "
    "not lower the speaker probe on the premise preset (paired +2.46 [-0.81, +5.84] at N = 2, "
    "+1.97 [-1.56, +5.48] at N = 5, 3 seeds at full size); an XPASS here means the direction "
    "holds at CI size",
    strict=False,
)
def test_ncore_lowers_speaker_leakage_on_the_premise_preset(control):
    (_, base_spk, _, _), (_, ncore_spk, _, _) = control
    assert ncore_spk.balanced_accuracy < base_spk.balanced_accuracy, (ncore_spk, base_spk)
