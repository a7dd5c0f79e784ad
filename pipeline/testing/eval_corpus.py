"""One small synthetic corpus with speaker and emotion views, shared by the evaluation and
experiment end-to-end tests.

It is built with the real pipeline (generator -> WAV files -> manifest -> WORLD perturbation
-> Zarr shards) once per pytest session, under the session's base temporary folder; the
second module that asks for it finds it ready. A ``ready`` file marks a finished build.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Small enough to train one epoch in seconds on 2 cores, large enough for a 9-clip test split.
CORPUS = {"clips": 36, "speakers": 4, "emotions": 3, "entanglement": 0.8}
VIEWS = 2

# Training options of every end-to-end run (the tiny backbone, one short epoch).
TRAIN_OPTIONS = [
    "--backbone", "tiny", "--lr", "1e-3", "--epochs", "1", "--seeds", "1",
    "--batch-size", "16", "--max-seconds", "0.4", "--device", "cpu",
]  # fmt: skip


def prepared_corpus(base: Path) -> Path:
    """The manifest path of the shared corpus under ``base`` (built on first use)."""
    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    root = base / "eval-corpus"
    manifest_path = root / "manifests" / "syn.json"
    if (root / "ready").exists():
        return manifest_path
    manifest, _ = build_manifest(
        "synthetic", root / "data", "syn", seed=42, manifest_path=manifest_path, **CORPUS
    )
    save_manifest_keeping_views(manifest, manifest_path)
    settings = PerturbSettings(views=VIEWS, shard_size=12, f0_method="dio")
    with ThreadPoolExecutor(2) as pool:
        run_perturb(manifest_path, settings, fixed_executor(pool), root / "cache", progress=False)
    (root / "ready").write_text("ok\n")
    return manifest_path
