"""Evaluation of a finished run: the test pass, the leakage probes, the summary over seeds.

For every seed of ``runs/<name>/`` the selected model (``seed-<s>/best/``) and the model
training started from embed the clips ONCE each (view 0, through the one forward path
``trainer/inference.py``), on the seed's own split (``seed-<s>/split.json``; the manifest's
split for run folders from before it was recorded); :func:`probe_seed` is the helper both
passes below share: probes fitted on the training split's embeddings and scored on the
test split, with bootstrap intervals, and the within-test cross-validated probes as a
secondary figure (docs/evaluation.md):

- :func:`evaluate_run` (the test split): the task head's metrics and the adversarial head's
  accuracy (``trainer/summary.py``), linear probes of y+ and y- on both models' embeddings
  and of y- from the y+ label alone (``trainer/probes.py``); per seed
  ``evaluation.json`` (with every test clip's predictions, for intervals and paired
  comparisons) and ``test_embeddings.npz``, then ``summary.json`` / ``summary.md`` and the
  figures (``trainer/plots.py``);
- :func:`probe_on_manifest` (another corpus, e.g. one where the two labels vary
  independently): the same probes, fitted on its train split and scored on its test
  split, ``probe-<manifest>.json`` / ``.md``.

The run folder is read and written through ``trainer/rundir.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.rng import stable_seed
from trainer.config import TrainConfig
from trainer.distributed import resolve_device
from trainer.errors import TrainerError
from trainer.inference import Inference, infer
from trainer.model import TINY_PRESETS
from trainer.plan import (
    RunPlan,
    build_model,
    eval_loader,
    load_selected_model,
    manifest_batches,
    plan_run,
    recorded_split,
    seed_plan,
)
from trainer.probes import (
    DEFAULT_FOLDS,
    held_out_label_only_probe,
    held_out_probe,
    label_only_probe,
    label_probes,
    transfer_probe,
    view_shift,
)
from trainer.records import (
    AdversaryRecord,
    ClipPredictions,
    EvaluationRecord,
    Invariance,
    InvarianceScores,
    ProbeReport,
    RunInfo,
    Selection,
    SummaryRecord,
)
from trainer.rundir import ModelRecord, RunDir, RunRecord, SeedDir
from trainer.summary import probe_markdown, probe_summary, seed_record, summarize, summary_markdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedPass:
    """One seed's models over the same clips: the selected model, the model training
    started from (``initial``), and the selected model's record."""

    finetuned: Inference
    initial: Inference
    record: ModelRecord


def embed_seed(
    config: TrainConfig,
    seed_dir: SeedDir,
    passes: dict[str, Callable[[], Iterable]],
    device: torch.device,
    initial_cache: dict[Any, Inference],
) -> dict[str, SeedPass]:
    """Run the seed's selected model and its starting model over each pass's batches
    (``passes``: name -> a function returning the batches, called once per model). The
    starting model of a pretrained backbone is the same for every seed, so its passes are
    cached in ``initial_cache`` by clip set; the tiny backbones are drawn per seed."""
    model, record = load_selected_model(seed_dir, device)
    finetuned = {name: infer(model, batches(), device) for name, batches in passes.items()}
    del model
    backbone = config.backbone
    start_key = f"{backbone}/{seed_dir.seed}" if backbone in TINY_PRESETS else backbone
    start = None
    done = {}
    for name, batches in passes.items():
        key = (start_key, name, finetuned[name].clip_ids)
        if key not in initial_cache:
            if start is None:
                start = build_model(
                    config, len(record.task_names), len(record.adv_names), seed_dir.seed
                ).to(device)
            initial_cache[key] = infer(start, batches(), device)
        initial = initial_cache[key]
        if initial.clip_ids != finetuned[name].clip_ids:
            raise RuntimeError("the fine-tuned and the initial passes saw different clips")
        done[name] = SeedPass(finetuned[name], initial, record)
    return done


def probe_seed(
    train: SeedPass, test: SeedPass, folds: int
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Probes of both labels on both models' embeddings, and of y- from the y+ label alone,
    fitted on ``train`` and scored on ``test`` with bootstrap intervals (HeldOutProbe
    dicts): ``{"finetuned": {"task", "adv"}, "backbone": {...}, "labels_only": {"adv"}}``;
    the same inside ``test`` by cross-validation under ``<name>_cv`` (ProbeResult dicts).
    Also returns each held-out probe's prediction for every test clip (``finetuned_adv``
    ...; -1 where the class never occurs in training). Folds and resamples are drawn from
    the seed."""
    value = stable_seed(test.record.seed, "probe") % (2**32)
    probes: dict[str, dict[str, Any]] = {}
    predictions: dict[str, np.ndarray] = {}
    for name, fit, scored in (
        ("finetuned", train.finetuned, test.finetuned),
        ("backbone", train.initial, test.initial),
    ):
        probes[name] = {}
        for label in ("task", "adv"):
            y_fit, y_scored = getattr(fit, f"y_{label}"), getattr(scored, f"y_{label}")
            result = held_out_probe(fit.embeddings, y_fit, scored.embeddings, y_scored, value)
            probes[name][label] = result.to_dict()
            predictions[f"{name}_{label}"] = result.predictions
        probes[f"{name}_cv"] = {
            label: result.to_dict()
            for label, result in label_probes(
                scored.embeddings, scored.y_task, scored.y_adv, folds=folds, seed=value
            ).items()
        }
    fit, scored = train.finetuned, test.finetuned
    labels_only = held_out_label_only_probe(
        fit.y_task, fit.y_adv, scored.y_task, scored.y_adv, seed=value
    )
    probes["labels_only"] = {"adv": labels_only.to_dict()}
    predictions["labels_only_adv"] = labels_only.predictions
    probes["labels_only_cv"] = {
        "adv": label_only_probe(scored.y_task, scored.y_adv, folds, value).to_dict()
    }
    return probes, predictions


# Perturbed views embedded for the invariance figures: the first two of the run's view set
# (each costs one more test pass per model).
PERTURBATION_VIEWS = 2


def perturbed_views(plan: RunPlan) -> list[int]:
    """The perturbed views (1, 2, ...) of the run's view set the evaluation embeds."""
    return list(range(1, min(PERTURBATION_VIEWS, plan.view_set.views) + 1))


def perturbation_record(
    train: SeedPass,
    test: SeedPass,
    views: list[SeedPass],
    kind: str,
    probes: dict[str, dict[str, Any]],
) -> Invariance:
    """How invariant each model is to the run's perturbation, on the test split
    (docs/evaluation.md, "Where the information is"): for y+ and y-, the held-out probe
    fitted on the training split's originals and scored on the test clips' perturbed views
    (``transfer``, mean over views; the same probe on the originals is ``probes``), and the
    view shift (how far a clip's views lie from its original, in units of the spread
    between the y- classes' centroids: 0 invariant, 1 a view moves a clip by a y-
    difference; ``trainer.probes.view_shift``)."""
    value = stable_seed(test.record.seed, "probe") % (2**32)
    scores: dict[str, InvarianceScores] = {}
    for model, name in (("finetuned", "finetuned"), ("initial", "backbone")):
        fit = getattr(train, model)
        originals = getattr(test, model)
        perturbed = [getattr(v, model) for v in views]
        for p in perturbed:
            if p.clip_ids != originals.clip_ids:
                raise RuntimeError("a perturbed view's pass saw other clips than the test pass")
        scored = [p.embeddings for p in perturbed]
        entry: dict[str, Any] = {}
        for label in ("task", "adv"):
            y_fit, y_test = getattr(fit, f"y_{label}"), getattr(originals, f"y_{label}")
            entry[f"{label}_transfer"] = transfer_probe(
                fit.embeddings, y_fit, scored, y_test, value
            )
            entry[f"{label}_chance"] = probes[name][label]["chance"]  # the same clips
        entry["view_shift"] = view_shift(originals.embeddings, scored, originals.y_adv)
        scores[name] = InvarianceScores(**entry)
    return Invariance(kind, len(views), scores["finetuned"], scores["backbone"])


def adversary_record(train: Inference, seed_dir: SeedDir, model: ModelRecord) -> AdversaryRecord:
    """The selected model's adversary against a standardised linear probe, both reading y-
    from the training split's embeddings and scored there (``trainer/adversary.py``), and
    the reversed gradient's share of the CE gradient in the selected epoch (from
    ``metrics.jsonl``; None when not recorded). A ``task-label`` adversary's probe also
    gets the one-hot y+."""
    from trainer.probes import fit_accuracy, one_hot
    from trainer.rundir import read_epoch_rows

    features = train.embeddings
    if model.adv_condition == "task-label":
        task = one_hot(train.y_task, np.arange(len(model.task_names)))
        features = np.concatenate([features, task], 1)
    rows = [r for r in read_epoch_rows(seed_dir.metrics) if r.epoch == model.epoch]
    return AdversaryRecord(
        head=float(np.mean(train.adv_pred == train.y_adv)) if len(train) else None,
        probe=fit_accuracy(features, train.y_adv),
        chance=1.0 / len(model.adv_names),
        grad_share=rows[0].adv_grad_share if rows else None,
        input=model.adv_input,
        condition=model.adv_condition,
    )


# ----- the test split ------------------------------------------------------------------------
def run_info(run: RunDir, record: RunRecord, dataset: str) -> RunInfo:
    """What a summary says about the run it describes (for the report's grouping)."""
    config = record.config
    return RunInfo(
        run=run.name,
        dataset=dataset,
        task=config.task,
        adversarial_label=config.adversarial_label,
        backbone=config.backbone,
        view_kind=config.view_kind,
        views=record.resolved_views if record.resolved_views is not None else config.views,
        adversary=config.adversary,
        recipe=config.recipe,
        adv_lr=config.adv_lr,
        adv_steps=config.adv_steps,
        adv_input=config.adv_input,
        adv_condition=config.adv_condition,
        grl_objective=config.grl_objective,
        lambda_reg=config.lambda_reg,
        lambda_grl=config.lambda_grl,
        grl_alpha=config.grl_alpha,
    )


def evaluate_seed(
    plan: RunPlan,
    config: TrainConfig,
    seed_dir: SeedDir,
    device: torch.device,
    initial_cache: dict[Any, Inference],
    folds: int = DEFAULT_FOLDS,
) -> EvaluationRecord:
    """The test pass of one seed, on its recorded split (train split embedded too, for the
    probes): writes ``evaluation.json`` and ``test_embeddings.npz`` in ``seed_dir`` and
    returns the record."""
    split = recorded_split(seed_dir, plan.manifest)
    plan = seed_plan(plan, split)
    passes = {n: (lambda n=n: eval_loader(config, plan, n)) for n in ("train", "test")}
    views = perturbed_views(plan)
    for view in views:
        passes[f"test-view-{view}"] = lambda view=view: eval_loader(config, plan, "test", view=view)
    done = embed_seed(config, seed_dir, passes, device, initial_cache)
    train, test = done["train"], done["test"].finetuned
    probes, probe_predictions = probe_seed(train, done["test"], folds)
    record = seed_record(
        seed_dir.seed,
        plan.task_names,
        plan.adv_names,
        test.y_task,
        test.y_adv,
        test.task_pred,
        test.adv_pred,
        probes,
    )
    model = done["test"].record
    record = record.replace(
        best_epoch=model.epoch,
        val_acc_task=model.val_acc_task,
        selection=Selection(model.selection_split or split.selection_split, model.select_metric),
        split=split.describe(),
        adversary=None
        if train.finetuned.adv_pred is None
        else adversary_record(train.finetuned, seed_dir, model),
        view_set=plan.view_set.key,  # the view set measured: the one the run recorded
        perturbation=perturbation_record(
            train,
            done["test"],
            [done[f"test-view-{v}"] for v in views],
            plan.view_set.kind,
            probes,
        )
        if views
        else None,
        clips=ClipPredictions(
            ids=tuple(test.clip_ids),
            y_task=tuple(test.y_task.tolist()),
            y_adv=tuple(test.y_adv.tolist()),
            task_pred=tuple(test.task_pred.tolist()),
            probe_pred={k: tuple(v.tolist()) for k, v in probe_predictions.items()},
        ),
    )
    seed_dir.write_evaluation(record)
    seed_dir.write_embeddings(
        clip_ids=np.array(test.clip_ids, dtype=str),
        y_task=test.y_task,
        y_adv=test.y_adv,
        embeddings=test.embeddings,
        backbone_embeddings=done["test"].initial.embeddings,
    )
    return record


def evaluate_run(
    run: str | os.PathLike[str],
    device: str | None = None,
    folds: int = DEFAULT_FOLDS,
    figures: bool = True,
    force: bool = False,
    plan: RunPlan | None = None,
) -> SummaryRecord:
    """Evaluate every seed of ``run`` with a selected model (reusing a seed's
    ``evaluation.json`` when it is newer than its model, unless ``force``), write
    ``summary.json`` and ``summary.md`` and, with ``figures``, the PNGs under
    ``run/figures/``. ``plan``: the training's plan, so the manifest is not read again.
    Returns the summary."""
    from trainer.plots import write_figures

    run = RunDir(run)
    record = run.read_record()
    config = record.config
    seeds = run.seeds_with_model()
    if not seeds:
        raise TrainerError(f"{run.path}: no finished seed (seed-*/best/); train it first")
    torch_device = resolve_device(device)
    cache: dict[Any, Inference] = {}
    records = []
    for seed_dir in seeds:
        fresh = (
            seed_dir.evaluation.is_file()
            and seed_dir.evaluation.stat().st_mtime >= seed_dir.model_record_path.stat().st_mtime
        )
        if fresh and not force:
            records.append(seed_dir.read_evaluation())
            continue
        if plan is None:
            plan = plan_run(config.replace(out=str(run.path)), draw_splits=False)
        records.append(evaluate_seed(plan, config, seed_dir, torch_device, cache, folds))
    # The dataset name without reading the manifest again when every seed was reused
    # (and when the manifest has moved since training).
    dataset = plan.manifest.dataset if plan is not None else _dataset_name(config)
    summary = summarize(records, run_info(run, record, dataset))
    run.write_summary(summary, summary_markdown(summary))
    if figures:
        write_figures(run, seeds[0], summary)
    return summary


def _dataset_name(config: TrainConfig) -> str:
    from pipeline.manifest import Manifest, ManifestError

    try:
        return Manifest.load(config.manifest).dataset
    except (ManifestError, OSError):
        return Path(config.manifest).stem


def ensure_summary(run: str | os.PathLike[str], device: str | None = None) -> SummaryRecord:
    """``run/summary.json``, evaluating the run first when it has none."""
    run_dir = RunDir(run)
    if run_dir.summary_json.is_file():
        return run_dir.read_summary()
    return evaluate_run(run, device=device)


# ----- another corpus ------------------------------------------------------------------------
def probe_on_manifest(
    run: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    device: str | None = None,
    folds: int = DEFAULT_FOLDS,
    batch_size: int = 16,
) -> ProbeReport:
    """Leakage measured on another corpus: the clips of ``manifest_path``'s train and test
    splits (view 0, from shards or source audio) through each seed's fine-tuned model and
    its starting model; both labels probed there, fitted on its train split and scored on
    its test split (and cross-validated inside its test split, the secondary figure).

    On a test split where y+ and y- are strongly correlated, a y- probe cannot tell "knows
    y-" from "knows y+"; on a corpus where the two are independent (e.g. the synthetic
    generator with ``entanglement 0``) it can. Writes ``run/probe-<manifest stem>.json`` and
    ``.md``; returns the report (mean and sample std over seeds, ddof=1, and bootstrap 95 %
    intervals over its test clips) as a :class:`~trainer.records.ProbeReport`.
    """
    from pipeline.manifest import Manifest, ManifestError

    run_dir = RunDir(run)
    config = run_dir.read_record().config
    seeds = run_dir.seeds_with_model()
    if not seeds:
        raise TrainerError(f"{run_dir.path}: no finished seed (seed-*/best/); train it first")
    try:
        manifest = Manifest.load(manifest_path)
    except ManifestError as error:  # named after the option that gave it
        raise ManifestError(f"--probe-manifest {error}") from None
    torch_device = resolve_device(device or "cpu")
    failures: dict[str, str] = {}

    train_ids = [c.id for c in manifest.clips if c.split == "train"]
    test_ids = [c.id for c in manifest.clips if c.split == "test"]
    if not train_ids or not test_ids:
        raise TrainerError(
            f"--probe-manifest {manifest_path}: the probes are fitted on its train split and "
            f"scored on its test split; it has {len(train_ids)} train and {len(test_ids)} "
            "test clips (re-import it with ncore-prep manifest to split it)"
        )

    def batches(ids: list[str]) -> Iterable:
        return manifest_batches(
            config, manifest, manifest_path, failures.__setitem__, batch_size, ids
        )

    per_seed = []
    cache: dict[Any, Inference] = {}
    clips: dict[str, int] = {}
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for seed_dir in seeds:
        done = embed_seed(
            config,
            seed_dir,
            {"train": lambda: batches(train_ids), "test": lambda: batches(test_ids)},
            torch_device,
            cache,
        )
        clips = {name: len(p.finetuned) for name, p in done.items()}
        probes, predictions = probe_seed(done["train"], done["test"], folds)
        test = done["test"].finetuned
        for key, pred in predictions.items():
            truth = test.y_task if key.endswith("_task") else test.y_adv
            groups.setdefault(key, []).append((truth, pred))
        per_seed.append(
            {"seed": seed_dir.seed}
            | {f"{model}_{label}": v for model, by in probes.items() for label, v in by.items()}
        )
    result = probe_summary(
        per_seed,
        {
            "run": run_dir.name,
            "manifest": str(manifest_path),
            "clips": clips.get("test", 0),
            "train_clips": clips.get("train", 0),
            "failed": dict(sorted(failures.items())),
            "task": config.task,
            "adversarial_label": config.adversarial_label,
        },
        groups,
    )
    run_dir.write_probe_report(
        manifest_path, result, probe_markdown(result, Path(manifest_path).stem)
    )
    return result
