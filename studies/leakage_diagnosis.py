"""Further diagnosis of studies/leakage_synthetic.py: why does N-CORE not lower speaker
leakage on the entangled synthetic corpus? (docs/evaluation.md, "Further diagnosis").

Usage (a long CPU run; needs the corpus and views of studies/leakage_synthetic.py)::

    .venv/bin/python studies/leakage_diagnosis.py --leakage /tmp/ncore-leakage \\
        --out /tmp/ncore-diagnosis [--seeds 42] [--variant name:key=value,...]

Steps, each skipped when its output is already there:

1. Speaker-perturbed views (WORLD, dio, N = 2, the same settings as the training views) of
   the *independent* synthetic corpus (entanglement 0), into ``OUT/cache``, through a copy
   of its manifest (``OUT/manifests``); the leakage folder is only read.
2. Training runs on the entangled corpus (fixed: 240 clips, entanglement 0.9, tiny
   backbone, lr 1e-3, 12 epochs, 1 s crops): the two runs of leakage_synthetic.py (reused
   from ``LEAKAGE/runs`` when their seeds are finished there) and the variants: the
   ``dann`` GRL schedule, lambda_REG 0.5 and 5, lambda_REG 0.05, 0.1 and 0.2 (where the
   consistency term starts to act), lambda_REG 0.5 and 5 with a scale-free consistency
   (``--consistency-norm batch-variance``, not in the paper), and any ``--variant``. Each
   run's last epoch is probed too (a run whose validation accuracy stays at chance
   selects epoch 1).
3. For every run and seed, and for the un-fine-tuned backbone: embed the independent
   corpus's originals (view 0) and perturbed views (1, 2); probe speaker and emotion on
   the originals (the leakage number of leakage_synthetic.py), on the perturbed views
   alone, and with a probe fitted on originals and tested on the perturbed views of the
   held-out clips. If the speaker perturbation removed the speaker cue, the last two would
   fall to chance.
4. What the perturbation does to the signal itself: ``ncore-prep selectivity`` (its
   library call, :func:`pipeline.selectivity.run_selectivity`) on the independent corpus's
   speaker views: acoustic probes of both labels on originals, views and transfer, with
   the cues p_s targets and those it is meant to keep, and its verdict.

Writes ``OUT/diagnosis-seeds-<seeds>.md`` and ``.json``. The numbers in docs/evaluation.md
come from ``--seeds 42`` (all runs) and ``--seeds 42,100,510 --only
backbone-only,ncore-n2,grl-dann,reg-0.5,reg-5``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, bench/ is on sys.path: share the study's settings with it.
from leakage_synthetic import base_config, parse_variant

from pipeline.atomic import write_json, write_text
from pipeline.manifest import LEGACY_F0_CEIL_HZ

# The F0 search ceiling of the published tables (docs/results.md), measured before the
# default became 2000 Hz (docs/defaults.md): DIO, the study's tracker, unvoices F0 above a
# twelfth of the sample rate anyway, and the synthetic voices sit far below 800 Hz.
STUDY_F0_CEIL_HZ = LEGACY_F0_CEIL_HZ

VIEWS = 2
# The scale-free variant of eq. 1 (not in the paper); it was a patch of this script and is
# now the trainer option --consistency-norm batch-variance, with the same arithmetic.
SCALE_FREE = {"consistency_norm": "batch-variance"}
FOLDS = 5


def independent_views(leakage: Path, out: Path) -> Path:
    """A copy of the independent corpus's manifest with speaker views of its own."""
    from pipeline.prep import PerturbSettings, fixed_executor, process_executor, run_perturb

    source = leakage / "manifests" / "synthetic-independent.json"
    target = out / "manifests" / "synthetic-independent-views.json"
    if not target.exists():
        data = json.loads(source.read_text(encoding="utf-8"))
        data["data_dir"] = str((source.parent / data["data_dir"]).resolve())
        data["view_sets"] = []
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, data)
    settings = PerturbSettings(
        kinds=("speaker",), views=VIEWS, f0_method="dio", f0_ceil_hz=STUDY_F0_CEIL_HZ, shard_size=64
    )
    with process_executor(2) as (pool, _):
        run_perturb(target, settings, fixed_executor(pool), out / "cache", progress=False)
    return target


def read_views(manifest_path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Clip ids and their (1 + N, T) float32 views, from the speaker view set's shards."""
    from pipeline.manifest import Manifest
    from pipeline.shards import open_view_set

    manifest = Manifest.load(manifest_path)
    ids, audio = [], []
    for reader in open_view_set(manifest, manifest_path, "speaker", VIEWS)[1]:  # checked
        ids.extend(reader.clip_ids)
        audio.extend(reader.read_range(0, len(reader)))
    return ids, audio


def transfer_probe(x_fit: np.ndarray, x_tests: list[np.ndarray], y: np.ndarray, seed: int):
    """Balanced accuracy of a probe fitted on ``x_fit`` and tested on each of ``x_tests``
    (the same clips in another view), cross-fitted: a clip is only tested by probes that
    did not see any view of it. The probe and folds of ``pipeline/stats/``."""
    from pipeline.stats.crossfit import stratified_folds
    from pipeline.stats.metrics import uar
    from pipeline.stats.probe import fit_probe

    predicted = [np.empty_like(y) for _ in x_tests]
    for fit, scored in stratified_folds(y, FOLDS, seed):
        probe = fit_probe(x_fit[fit], y[fit])
        for p, x in zip(predicted, x_tests, strict=True):
            p[scored] = probe.predict(x[scored])
    return float(np.mean([uar(y, p) for p in predicted]))


def view_probes(xs: list[np.ndarray], y: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Per label: CV probe on view 0, CV probe on each perturbed view (mean), and the
    transfer probe view 0 -> perturbed views. ``xs``: one (clips, D) array per view."""
    from trainer.probes import linear_probe

    result = {}
    for label, labels in y.items():
        result[f"{label}_orig"] = linear_probe(xs[0], labels, FOLDS, seed).balanced_accuracy
        result[f"{label}_pert"] = float(
            np.mean([linear_probe(x, labels, FOLDS, seed).balanced_accuracy for x in xs[1:]])
        )
        result[f"{label}_transfer"] = transfer_probe(xs[0], xs[1:], labels, seed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leakage", type=Path, default=Path("/tmp/ncore-leakage"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/ncore-diagnosis"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--max-seconds", type=float, default=1.0)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--only", default=None, help="Comma-separated run names to include.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)

    from pipeline.manifest import Manifest
    from pipeline.rng import stable_seed
    from trainer.checkpoint import latest_checkpoint, load_checkpoint
    from trainer.config import parse_seeds
    from trainer.data import audio_batches
    from trainer.evaluate import evaluate_run
    from trainer.inference import infer
    from trainer.loop import train
    from trainer.plan import build_model, load_selected_model
    from trainer.probes import linear_probe, view_shift
    from trainer.rundir import RunDir, read_epoch_rows

    started = time.perf_counter()
    entangled = args.leakage / "manifests" / "synthetic-entangled.json"
    if not (
        entangled.exists() and (args.leakage / "manifests/synthetic-independent.json").exists()
    ):
        raise SystemExit(
            f"{args.leakage}: no synthetic corpus; run studies/leakage_synthetic.py --out "
            f"{args.leakage} first"
        )
    seeds = parse_seeds(args.seeds)

    # -- 1. perturbed views of the independent corpus --------------------------------------
    views_manifest = independent_views(args.leakage, args.out)
    manifest = Manifest.load(views_manifest)
    ids, audio = read_views(views_manifest)
    by_id = manifest.clip_by_id()
    y = {
        label: np.array([manifest.label_index(label)[getattr(by_id[c], label)] for c in ids])
        for label in ("speaker", "emotion")
    }
    logging.info("independent views ready after %.0f s", time.perf_counter() - started)

    # -- 2. training runs on the entangled corpus ------------------------------------------
    base = base_config(entangled, args.epochs, args.max_seconds, args.seeds)
    rows = [
        ("backbone-only", {"adversary": False, "views": 0, "lambda_reg": 0.0}),
        ("ncore-n2", {"views": VIEWS}),
        ("grl-dann", {"views": VIEWS, "grl_schedule": "dann"}),
        ("reg-0.5", {"views": VIEWS, "lambda_reg": 0.5}),
        ("reg-5", {"views": VIEWS, "lambda_reg": 5.0}),
        # (d) where between the paper's weight and collapse does consistency start to act?
        ("reg-0.05", {"views": VIEWS, "lambda_reg": 0.05}),
        ("reg-0.1", {"views": VIEWS, "lambda_reg": 0.1}),
        ("reg-0.2", {"views": VIEWS, "lambda_reg": 0.2}),
        # (d) the same with a scale-free consistency (trainer.losses.batch_variance_consistency)
        ("scalefree-0.5", {"views": VIEWS, "lambda_reg": 0.5, **SCALE_FREE}),
        ("scalefree-5", {"views": VIEWS, "lambda_reg": 5.0, **SCALE_FREE}),
        *(parse_variant(v) for v in args.variant),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        rows = [row for row in rows if row[0] in wanted]
    run_dirs = {}
    for name, changes in rows:
        reused = args.leakage / "runs" / name
        if all(RunDir(reused).seed(s).evaluation.is_file() for s in seeds):
            run_dirs[name] = reused  # the same config, already trained by leakage_synthetic.py
            continue
        run_dirs[name] = args.out / "runs" / name
        t0 = time.perf_counter()
        train(base.replace(**changes, out=str(run_dirs[name]), resume=True))
        evaluate_run(run_dirs[name], figures=False)
        logging.info("%s trained in %.0f s", name, time.perf_counter() - t0)

    # -- 3. probes on original and perturbed views -----------------------------------------
    def embed_views(model, views: int = 1 + VIEWS) -> list[np.ndarray]:
        def batches(v: int):
            clips = ((c, a[v], 0, 0) for c, a in zip(ids, audio, strict=True))
            return audio_batches(clips, batch_size=16, max_seconds=args.max_seconds)

        cpu = torch.device("cpu")
        return [infer(model, batches(v), cpu).in_order(ids).embeddings for v in range(views)]

    results: dict[str, dict[str, object]] = {}
    for name, run in [("un-fine-tuned backbone", run_dirs[rows[0][0]]), *run_dirs.items()]:
        config = RunDir(run).read_record().config
        per_seed = []
        for seed in seeds:
            seed_dir = RunDir(run).seed(seed)
            model, info = load_selected_model(seed_dir)
            record = {"seed": seed}
            if name == "un-fine-tuned backbone":
                classes = len(info.task_names), len(info.adv_names)
                model = build_model(config, *classes, seed).eval()
            else:
                test = seed_dir.read_evaluation()
                record["test_acc"] = test.metrics["accuracy"]
                record["best_epoch"] = test.best_epoch
                rows_ = read_epoch_rows(seed_dir.metrics)
                record["adv_head_test"] = test.metrics.get("adv_head_accuracy")
                record["grl_alpha_last"] = rows_[-1].grl_alpha
                record["train_consistency_last"] = rows_[-1].train_consistency
                record["train_consistency_first"] = rows_[0].train_consistency
            xs = embed_views(model)
            record.update(view_probes(xs, y, stable_seed(seed, "probe") % (2**32)))
            # How far a clip's views lie from it, in spreads between the speakers' centroids.
            spread = np.mean([np.sum((x - xs[0]) ** 2, axis=1).mean() for x in xs[1:]])
            record["view_shift"] = view_shift(xs[0], xs[1:], y["speaker"])
            # The scale of the embeddings: eq. 1 is not scale-invariant, so it can be lowered
            # by shrinking every embedding instead of by making the views agree.
            record["embedding_rms"] = float(np.sqrt(np.mean(np.sum(xs[0] ** 2, axis=1))))
            record["views_mean_sq_distance"] = float(spread)
            record["clip_variance"] = float(xs[0].var(axis=0).sum())
            if name != "un-fine-tuned backbone":
                # The last epoch too: a collapsed run (val accuracy at chance) selects epoch 1.
                load_checkpoint(latest_checkpoint(seed_dir.checkpoints), model)
                x_last = embed_views(model, views=1)[0]
                for label, labels in y.items():
                    probe = linear_probe(x_last, labels, FOLDS, stable_seed(seed, "probe") % 2**32)
                    record[f"{label}_last"] = probe.balanced_accuracy
                record["embedding_rms_last"] = float(np.sqrt(np.mean(np.sum(x_last**2, axis=1))))
            per_seed.append(record)
            logging.info("%s seed %d: %s", name, seed, record)
        results[name] = {"run": str(run), "per_seed": per_seed}

    # -- 4. the signal itself: ncore-prep selectivity on the same views ----------------------
    from pipeline.selectivity import SelectivitySettings, run_selectivity

    ((_, selectivity, _),) = run_selectivity(
        views_manifest, SelectivitySettings(max_clips=len(ids), views=VIEWS)
    )
    results["selectivity"] = selectivity.to_dict()

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "diagnosis-seeds-" + "-".join(map(str, seeds))
    write_json(args.out / f"{stem}.json", results)
    table = markdown(results)
    write_text(args.out / f"{stem}.md", table)
    print(table)
    logging.info("total %.0f s", time.perf_counter() - started)


def _cell(values: list[float | None], percent: bool = True) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    scale = 100 if percent else 1
    if len(values) == 1:
        return f"{scale * values[0]:.2f}"
    return f"{scale * np.mean(values):.2f} ± {scale * np.std(values, ddof=1):.2f}"


def markdown(results: dict[str, dict[str, object]]) -> str:
    """The tables of diagnosis.md: models, then the selectivity of the speaker views."""
    lines = [
        "Independent corpus (240 clips, speaker and emotion independent), probes in % "
        "balanced accuracy (mean ± sample std over seeds when more than one); chance "
        "speaker 16.67, emotion 25.00. orig = probe on originals (the leakage number); "
        "pert = probe fitted and tested on perturbed views; orig->pert = fitted on "
        "originals, tested on the perturbed views of held-out clips. View shift = how far "
        "a clip's perturbed embeddings lie from its original, in spreads between the "
        "speakers' centroids (trainer.probes.view_shift); Views sq. dist. = the mean "
        "squared view-original distance "
        "(what eq. 1 penalises); Clip variance = total variance of the originals' "
        "embeddings; Emb. RMS = root mean squared norm of the embeddings.",
        "",
        "| Model | Test acc | Sel. epoch | Adv. head (test) | Speaker orig | Speaker pert | "
        "Speaker orig->pert | Emotion orig | Emotion pert | Emotion orig->pert | "
        "View shift | Views sq. dist. | Clip variance | Emb. RMS | "
        "Last epoch: speaker / emotion |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        if name == "selectivity":
            continue
        seeds = entry["per_seed"]

        def col(key: str, percent: bool = True, seeds=seeds) -> str:
            return _cell([s.get(key) for s in seeds], percent)

        epochs = ",".join(str(s["best_epoch"]) for s in seeds if "best_epoch" in s) or "–"
        lines.append(
            f"| {name} | {col('test_acc')} | {epochs} | {col('adv_head_test')} | "
            f"{col('speaker_orig')} | {col('speaker_pert')} | {col('speaker_transfer')} | "
            f"{col('emotion_orig')} | {col('emotion_pert')} | {col('emotion_transfer')} | "
            f"{col('view_shift', percent=False)} | "
            f"{col('views_mean_sq_distance', percent=False)} | "
            f"{col('clip_variance', percent=False)} | "
            f"{col('embedding_rms', percent=False)} | {col('speaker_last')} / "
            f"{col('emotion_last')} |"
        )
    if "selectivity" in results:
        from pipeline.selectivity import Selectivity, markdown_table

        selectivity = Selectivity.from_dict(results["selectivity"])
        lines += ["", "Signal level (`ncore-prep selectivity` on the same speaker views):", ""]
        lines.append(markdown_table(selectivity))
        lines += [f"- {v}" for v in selectivity.verdicts]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
