"""Positive control: on a corpus where the method's premise holds, does N-CORE lower the
speaker leakage of the backbone-only baseline, and keep the emotion accuracy?

Usage (a long CPU run; the table goes to README)::

    .venv/bin/python bench/positive_control.py --out /tmp/ncore-positive [--seeds 42,100,510]

Steps, each skipped when its output is already there:

1. Training corpus: the synthetic ``premise`` preset (speaker only in cues p_s randomises,
   emotion only in cues it keeps), 240 clips, 6 speakers x 4 emotions, **entanglement
   0.9** (90 % of an emotion's clips from one speaker: the speaker is a shortcut to the
   emotion). Speaker-perturbed views p_s, N = 2, DIO, default parameters.
2. Probe corpus: the same preset and speakers, another generator seed (no shared clip),
   480 clips, entanglement 0 (speaker and emotion independent), its own 70/30 train/test
   split stratified on emotion.
3. Runs with ``ncore-train`` (subprocesses), tiny backbone, lr 1e-3, ``--epochs`` epochs,
   1 s crops, one split per seed: ``backbone-only`` (no views, no adversary: the task head
   alone) and ``ncore`` (N = 2, the paper's loss weights lambda_REG 0.005, lambda_GRL 0.01),
   plus ``--variant name:--option value ...`` rows.
4. For every run and seed: emotion-task test metrics (``summary.json``); the probe corpus
   embedded with the selected model (``ncore-train embed``); linear probes of speaker and
   emotion fitted on the probe corpus's training split and scored on its test split
   (``trainer.probes.held_out_probe``: balanced accuracy, bootstrap 95 % interval over
   test clips); the paired difference of each run's speaker probe from the baseline's on the
   same test clips (``trainer.probes.paired_difference``, averaged over seeds).

Writes ``OUT/positive-control.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trainer.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def corpora(
    out: Path, clips: int, probe_clips: int, entanglement: float, views: int
) -> tuple[Path, Path]:
    """The training corpus (with p_s views) and the independent probe corpus."""
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    train = out / "manifests" / "premise-entangled.json"
    probe = out / "manifests" / "premise-independent.json"
    for path, kwargs in (
        (train, {"clips": clips, "entanglement": entanglement, "synthetic_seed": 0}),
        (
            probe,
            {"clips": probe_clips, "entanglement": 0.0, "synthetic_seed": 1, "test_fraction": 0.3},
        ),
    ):
        if path.exists():
            continue
        test_fraction = kwargs.pop("test_fraction", 0.2)
        manifest, _ = build_manifest(
            "synthetic",
            out / "data" / path.stem,
            path.stem,
            seed=42,
            manifest_path=path,
            preset="premise",
            test_fraction=test_fraction,
            **kwargs,
        )
        save_manifest_keeping_views(manifest, path)
    settings = PerturbSettings(kinds=("speaker",), views=views, f0_method="dio")
    with ProcessPoolExecutor(2) as pool:
        run_perturb(train, settings, fixed_executor(pool), out / "cache", progress=False)
    return train, probe


def train_run(train: Path, run: Path, options: list[str], args) -> None:
    if RunDir(run).summary_json.exists():
        return
    command = [
        str(BIN / "ncore-train"), "--manifest", str(train), "--backbone", "tiny",
        "--lr", "1e-3", "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--max-seconds", "1.0", "--batch-size", "16", "--seeds", args.seeds,
        "--device", "cpu", "--out", str(run), "--resume", *options,
    ]  # fmt: skip
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True, env=child_env(args.threads))


def child_env(threads: int) -> dict[str, str]:
    """The environment of the ncore-train subprocesses: this checkout, ``threads`` torch
    threads (a run is reproducible only at a fixed thread count; 1 also avoids
    oversubscribing a shared machine)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


def embed(run: Path, seed: int, probe: Path) -> dict[str, np.ndarray]:
    target = run / f"probe-embeddings-seed-{seed}.npz"
    if not target.exists():
        command = [
            str(BIN / "ncore-train"), "embed", "--run", str(run), "--seed", str(seed),
            "--manifest", str(probe), "--out", str(target), "--device", "cpu",
        ]  # fmt: skip
        subprocess.run(command, check=True, env=child_env(1))
    with np.load(target, allow_pickle=False) as data:
        return {k: data[k] for k in ("clip_ids", "emotion", "speaker", "split", "embeddings")}


def probes(data: dict[str, np.ndarray], seed: int) -> dict[str, object]:
    """Speaker and emotion probes: fitted on the probe corpus's train (+ val) clips, scored
    on its test clips."""
    from pipeline.rng import stable_seed
    from trainer.probes import held_out_probe

    test = data["split"] == "test"
    out: dict[str, object] = {}
    for label in ("speaker", "emotion"):
        names = sorted(set(data[label].tolist()))
        y = np.array([names.index(v) for v in data[label].tolist()])
        result = held_out_probe(
            data["embeddings"][~test],
            y[~test],
            data["embeddings"][test],
            y[test],
            seed=stable_seed(seed, "positive-control", label) % 2**32,
        )
        out[label] = result
        out[f"{label}_truth"] = y[test]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ncore-positive"))
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--probe-clips", type=int, default=480)
    parser.add_argument("--entanglement", type=float, default=0.9)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="42,100,510")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:OPTIONS, e.g. 'scalefree:--views 2 --consistency-norm batch-variance'",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    from trainer.probes import paired_difference

    train, probe = corpora(args.out, args.clips, args.probe_clips, args.entanglement, args.views)
    print(f"corpora and views ready after {time.perf_counter() - started:.0f} s", flush=True)
    rows = [
        ("backbone-only", ["--views", "0", "--no-adversary", "--lambda-reg", "0"]),
        (f"ncore-n{args.views}", ["--views", str(args.views)]),
    ]
    for text in args.variant:
        name, _, options = text.partition(":")
        rows.append((name, shlex.split(options)))
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, object]] = {}
    per_seed_probes: dict[str, dict[int, dict[str, object]]] = {}
    for name, options in rows:
        run = args.out / "runs" / name
        t0 = time.perf_counter()
        train_run(train, run, options, args)
        per_seed_probes[name] = {s: probes(embed(run, s, probe), s) for s in seeds}
        results[name] = {"seconds": time.perf_counter() - t0}
        print(f"{name} done in {time.perf_counter() - t0:.0f} s", flush=True)

    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    def mean_std(values: list[float]) -> str:
        if len(values) == 1:
            return pct(values[0])
        return f"{pct(float(np.mean(values)))} ± {pct(float(np.std(values, ddof=1)))}"

    lines = [
        f"Training corpus: synthetic premise preset, {args.clips} clips, entanglement "
        f"{args.entanglement}; probe corpus: premise, {args.probe_clips} clips, entanglement 0, "
        f"another generator seed, probes fitted on its train split and scored on its test "
        f"split (balanced accuracy, bootstrap 95 % interval over test clips, per seed; mean "
        f"over seeds). Seeds {args.seeds}, {args.epochs} epochs, tiny backbone, lr 1e-3, "
        f"{args.threads} torch thread(s).",
        "",
        "| Run | Acc | F1 | UAR | Speaker probe (independent) per seed [95 % CI] | Speaker "
        "probe, mean | Emotion probe (independent), mean | Speaker probe minus baseline "
        "(paired, mean over seeds) [95 % CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline = rows[0][0]
    record: dict[str, object] = {"settings": vars(args) | {"out": str(args.out)}, "runs": {}}
    for name, _ in rows:
        test = [seed_metrics(args.out / "runs" / name, s) for s in seeds]
        metrics = {key: [t[key] for t in test] for key in ("accuracy", "macro_f1", "uar")}
        speaker = [per_seed_probes[name][s]["speaker"] for s in seeds]
        emotion = [per_seed_probes[name][s]["emotion"] for s in seeds]
        cells = ", ".join(
            f"{pct(p.balanced_accuracy)} [{pct(p.ci_low)}, {pct(p.ci_high)}]" for p in speaker
        )
        diff = "–"
        paired = None
        if name != baseline:
            groups = [
                (
                    per_seed_probes[name][s]["speaker_truth"],
                    per_seed_probes[name][s]["speaker"].predictions,
                    per_seed_probes[baseline][s]["speaker"].predictions,
                )
                for s in seeds
            ]
            paired = paired_difference(groups, seed=stable_int(name))
            diff = (
                f"{pct(paired['difference'])} [{pct(paired['ci_low'])}, {pct(paired['ci_high'])}]"
            )
        lines.append(
            f"| {name} | {mean_std(metrics['accuracy'])} | {mean_std(metrics['macro_f1'])} | "
            f"{mean_std(metrics['uar'])} | {cells} | "
            f"{mean_std([p.balanced_accuracy for p in speaker])} | "
            f"{mean_std([p.balanced_accuracy for p in emotion])} | {diff} |"
        )
        record["runs"][name] = {
            "metrics": metrics,
            "speaker_probe": [p.to_dict() for p in speaker],
            "emotion_probe": [p.to_dict() for p in emotion],
            "paired_speaker_difference": paired,
            "seconds": results[name]["seconds"],
        }
    chance = speaker[0].chance
    lines += ["", f"Chance: speaker {pct(chance)}, emotion {pct(emotion[0].chance)}."]
    lines.append(f"Total {time.perf_counter() - started:.0f} s wall.")
    text = "\n".join(lines) + "\n"
    (args.out / "positive-control.md").write_text(text, encoding="utf-8")
    (args.out / "positive-control.json").write_text(
        json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8"
    )
    print(text)


def seed_metrics(run: Path, seed: int) -> dict[str, float]:
    """One seed's emotion-task test metrics, from whichever record the run folder has (the
    evaluation's, or the legacy layout's test record)."""
    seed_dir = RunDir(run).seed(seed)
    for path in (seed_dir.evaluation, seed_dir.legacy_test_metrics):
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))["metrics"]
    raise SystemExit(f"{run}: no test metrics for seed {seed}")


def stable_int(name: str) -> int:
    from pipeline.rng import stable_seed

    return stable_seed("positive-control-paired", name) % 2**32


if __name__ == "__main__":
    main()
