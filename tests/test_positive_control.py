"""Positive control, CI-sized and strict (the full table: studies/positive_control.py, README).

On the synthetic ``premise`` preset the speaker lives only in cues the speaker
perturbation p_s randomises and the emotion only in cues it keeps. Trained on such a corpus
with speaker and emotion independent (entanglement 0), the toolkit's recommended recipe
(``--recipe ncore``, the default: an adversary that can learn and the linear eraser) must
carry clearly less speaker information than the backbone-only baseline, and than the same
recipe with the reversal off (``--grl-alpha 0``: the adversary only observes, the eraser is
off), so that the removal terms are what removed it; measured on an independent corpus (no
shared clip) by a linear probe fitted on its training split and scored on its test split,
while keeping the emotion task. With the
reversal off the adversary must read the speaker about as well as a linear probe on the
same training embeddings (it is competent). And the mechanism: p_s views of the probe
corpus carry far less speaker information than the originals in the encoder's embedding.
No expected failure: any of these failing fails the build. Everything is real: generated
WAVs, WORLD views in Zarr shards, ``ncore-train`` and ``ncore-train embed`` as subprocesses.
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
TRAIN = {"clips": 120, "speakers": 4, "emotions": 3, "entanglement": 0.0, "synthetic_seed": 0}
PROBE = {"clips": 240, "speakers": 4, "emotions": 3, "entanglement": 0.0, "synthetic_seed": 1}
# Enough optimizer steps for the adversary game to play out (about 80: 96 training clips in
# batches of 8, 8 epochs); with 16 steps the reversal had not acted yet (measured: speaker
# probe 91.7 vs 90.8 for the baseline).
EPOCHS = "8"
BATCH = "8"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _corpora(root: Path) -> tuple[Path, Path]:
    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.manifest import LEGACY_F0_CEIL_HZ
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    paths = []
    for name, options, test_fraction in (("train", TRAIN, 0.2), ("probe", PROBE, 0.5)):
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
    # The F0 range the measured figures were made with (the default before 2000 Hz; the
    # synthetic voices sit far below 800 Hz, docs/defaults.md).
    settings = PerturbSettings(
        kinds=("speaker",), views=2, f0_method="dio", f0_ceil_hz=LEGACY_F0_CEIL_HZ, shard_size=32
    )
    with ThreadPoolExecutor(2) as pool:
        for path in paths:
            run_perturb(path, settings, fixed_executor(pool), root / "cache", progress=False)
    return paths[0], paths[1]


def _train_and_probe(root: Path, train: Path, probe: Path, name: str, options: list[str]):
    """(test accuracy, speaker probe, emotion probe, speaker perturbation probe, the last
    epoch's metrics row) of one run."""
    from pipeline.manifest import Manifest
    from trainer.embed import embed_views
    from trainer.plan import load_selected_model
    from trainer.probes import held_out_probe, perturbation_probe
    from trainer.rundir import RunDir, read_epoch_rows

    run = root / "runs" / name
    command = [
        str(BIN / "ncore-train"), "--manifest", str(train), "--backbone", "tiny", "--lr", "1e-3",
        "--epochs", EPOCHS, "--patience", EPOCHS, "--batch-size", BATCH, "--max-seconds", "0.8",
        "--seeds", str(SEED),
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
        read_epoch_rows(RunDir(run).seed(SEED).metrics)[-1],
    )


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    root = tmp_path_factory.mktemp("positive-control")
    train, probe = _corpora(root)
    runs = {
        "baseline": ["--views", "0", "--no-adversary", "--lambda-reg", "0"],
        "observer": ["--views", "2", "--grl-alpha", "0"],  # the recipe, reversal off
        "recommended": ["--views", "2"],  # the defaults: --recipe ncore
    }
    return {name: _train_and_probe(root, train, probe, name, o) for name, o in runs.items()}


@pytest.mark.slow
def test_the_recommended_recipe_removes_the_speaker_and_keeps_the_task(control):
    base, observer, ncore = control["baseline"], control["observer"], control["recommended"]
    # There is speaker information to remove: the baseline decodes the speaker of unseen
    # clips well above chance (1/4).
    assert base[1].balanced_accuracy > base[1].chance + 0.15, base[1]
    # The direction: lower than the baseline, and than the same recipe with the reversal
    # off, so that the removal terms are what removed it (measured at this size, 80
    # optimizer steps: 80.9 against 86.1 with them off; at full size, README).
    # At least 5 points below the baseline (measured at this size: 80.9 against 91.3).
    assert ncore[1].balanced_accuracy < base[1].balanced_accuracy - 0.05, (ncore[1], base[1])
    assert ncore[1].balanced_accuracy < observer[1].balanced_accuracy, (ncore[1], observer[1])
    # The task is kept (within 10 points on the 24 test clips) and so is the emotion probe.
    assert ncore[0] > base[0] - 0.10, (ncore[0], base[0])
    assert ncore[2].balanced_accuracy > base[2].balanced_accuracy - 0.10, (ncore[2], base[2])


@pytest.mark.slow
def test_with_the_reversal_off_the_adversary_reads_what_a_linear_probe_reads(control):
    row = control["observer"][4]
    assert row.adv_grad_share == 0.0  # alpha 0: nothing reaches the encoder
    assert row.adv_fit_acc >= row.probe_fit_acc_adv - 0.15, row
    assert row.adv_fit_acc > 0.5, row  # chance 1/4


@pytest.mark.slow
def test_speaker_perturbation_takes_the_speaker_out_of_what_the_encoder_sees(control):
    # The premise, seen through the encoders' own embeddings on the independent corpus: a
    # probe reads the speaker from originals, but not from p_s views (fitted on views), and
    # a probe fitted on originals does not transfer to views.
    for name in ("baseline", "observer"):
        measured = control[name][3]
        assert measured.originals > measured.chance + 0.15, (name, measured)
        assert measured.views < measured.originals - 0.15, (name, measured)
        assert measured.transfer < measured.originals - 0.15, (name, measured)
