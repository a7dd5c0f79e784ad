"""Evaluation of a finished run: the test pass, the leakage probes, the summary over seeds.

For every seed of ``runs/<name>/`` the selected model (``seed-<s>/best/``) and the model
training started from embed the clips ONCE each (view 0, through the one forward path
``trainer/inference.py``); :func:`probe_seed` is the helper both passes below share:

- :func:`evaluate_run` (the test split): the task head's metrics and the adversarial head's
  accuracy (``trainer/summary.py``), linear probes of y+ and y- on both models' embeddings
  and of y- from the y+ label alone (``trainer/probes.py``); per seed
  ``evaluation.json`` and ``test_embeddings.npz``, then ``summary.json`` / ``summary.md``
  and the figures (``trainer/plots.py``);
- :func:`probe_on_manifest` (another corpus, e.g. one where the two labels vary
  independently): the same probes on all its clips, ``probe-<manifest>.json`` / ``.md``.

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

from pipeline.atomic import write_json, write_npz, write_text
from pipeline.rng import stable_seed
from trainer.config import TrainConfig
from trainer.distributed import resolve_device
from trainer.errors import TrainerError
from trainer.inference import Inference, infer
from trainer.plan import (
    RunPlan,
    build_model,
    eval_loader,
    load_selected_model,
    manifest_batches,
    plan_run,
)
from trainer.probes import DEFAULT_FOLDS, label_only_probe, label_probes
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
    batches: Callable[[], Iterable],
    device: torch.device,
    initial_cache: dict[str, Inference],
) -> SeedPass:
    """Run the seed's selected model and its starting model over ``batches()`` (called
    once per model). The starting model of a pretrained backbone is the same for every
    seed, so its pass is cached in ``initial_cache``; the tiny backbone is drawn per seed."""
    model, record = load_selected_model(seed_dir, device)
    finetuned = infer(model, batches(), device)
    del model
    key = config.backbone if config.backbone != "tiny" else f"tiny/{seed_dir.seed}"
    if key not in initial_cache:
        start = build_model(config, len(record.task_names), len(record.adv_names), seed_dir.seed)
        initial_cache[key] = infer(start.to(device), batches(), device)
        del start
    initial = initial_cache[key]
    if initial.clip_ids != finetuned.clip_ids:
        raise RuntimeError("the fine-tuned and the initial passes saw different clips")
    return SeedPass(finetuned, initial, record)


def probe_seed(done: SeedPass, folds: int) -> dict[str, dict[str, Any]]:
    """Probes of both labels on both models' embeddings, and of y- from the y+ label
    alone: ``{"finetuned": {"task", "adv"}, "backbone": {...}, "labels_only": {"adv"}}``
    (ProbeResult dicts), with folds drawn from the seed."""
    y_task, y_adv = done.finetuned.y_task, done.finetuned.y_adv
    probe_seed_value = stable_seed(done.record.seed, "probe") % (2**32)
    probes = {
        name: {
            label: result.to_dict()
            for label, result in label_probes(
                embeddings, y_task, y_adv, folds=folds, seed=probe_seed_value
            ).items()
        }
        for name, embeddings in (
            ("finetuned", done.finetuned.embeddings),
            ("backbone", done.initial.embeddings),
        )
    }
    probes["labels_only"] = {
        "adv": label_only_probe(y_task, y_adv, folds, probe_seed_value).to_dict()
    }
    return probes


# ----- the test split ------------------------------------------------------------------------
def run_info(run: RunDir, record: RunRecord, dataset: str) -> dict[str, Any]:
    """What a summary says about the run it describes (for the report's grouping)."""
    config = record.config
    return {
        "run": run.name,
        "dataset": dataset,
        "task": config.task,
        "adversarial_label": config.adversarial_label,
        "backbone": config.backbone,
        "view_kind": config.view_kind,
        "views": record.resolved_views if record.resolved_views is not None else config.views,
        "adversary": config.adversary,
        "grl_objective": config.grl_objective,
        "lambda_reg": config.lambda_reg,
        "lambda_grl": config.lambda_grl,
        "grl_alpha": config.grl_alpha,
    }


def evaluate_seed(
    plan: RunPlan,
    config: TrainConfig,
    seed_dir: SeedDir,
    device: torch.device,
    initial_cache: dict[str, Inference],
    folds: int = DEFAULT_FOLDS,
) -> dict[str, Any]:
    """The test pass of one seed: writes ``evaluation.json`` and ``test_embeddings.npz``
    in ``seed_dir`` and returns the record."""
    done = embed_seed(
        config, seed_dir, lambda: eval_loader(config, plan, "test"), device, initial_cache
    )
    test = done.finetuned
    record = seed_record(
        seed_dir.seed,
        plan.task_names,
        plan.adv_names,
        test.y_task,
        test.y_adv,
        test.task_pred,
        test.adv_pred,
        probe_seed(done, folds),
    )
    record["best_epoch"] = done.record.epoch
    record["val_acc_task"] = done.record.val_acc_task
    seed_dir.write_evaluation(record)
    write_npz(
        seed_dir.embeddings,
        clip_ids=np.array(test.clip_ids, dtype=str),
        y_task=test.y_task,
        y_adv=test.y_adv,
        embeddings=test.embeddings,
        backbone_embeddings=done.initial.embeddings,
    )
    return record


def evaluate_run(
    run: str | os.PathLike[str],
    device: str | None = None,
    folds: int = DEFAULT_FOLDS,
    figures: bool = True,
    force: bool = False,
    plan: RunPlan | None = None,
) -> dict[str, Any]:
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
    cache: dict[str, Inference] = {}
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
            plan = plan_run(config.replace(out=str(run.path)))
        records.append(evaluate_seed(plan, config, seed_dir, torch_device, cache, folds))
    # The dataset name without reading the manifest again when every seed was reused
    # (and when the manifest has moved since training).
    dataset = plan.manifest.dataset if plan is not None else _dataset_name(config)
    summary = summarize(records, run_info(run, record, dataset))
    write_json(run.summary_json, summary)
    write_text(run.summary_md, summary_markdown(summary))
    if figures:
        write_figures(run, seeds[0], summary)
    return summary


def _dataset_name(config: TrainConfig) -> str:
    from pipeline.manifest import Manifest, ManifestError

    try:
        return Manifest.load(config.manifest).dataset
    except (ManifestError, OSError):
        return Path(config.manifest).stem


def ensure_summary(run: str | os.PathLike[str], device: str | None = None) -> dict[str, Any]:
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
) -> dict[str, Any]:
    """Leakage measured on another corpus: every clip of ``manifest_path`` (view 0, from
    shards or source audio) through each seed's fine-tuned model and its starting model,
    and both labels probed there.

    On a test split where y+ and y- are strongly correlated, a y- probe cannot tell "knows
    y-" from "knows y+"; on a corpus where the two are independent (e.g. the synthetic
    generator with ``entanglement 0``) it can. Writes ``run/probe-<manifest stem>.json`` and
    ``.md``; returns the dict (mean and sample std over seeds, ddof=1).
    """
    from pipeline.manifest import Manifest, ManifestError

    run_dir = RunDir(run)
    config = run_dir.read_record().config
    seeds = run_dir.seeds_with_model()
    if not seeds:
        raise TrainerError(f"{run_dir.path}: no finished seed (seed-*/best/); train it first")
    try:
        manifest = Manifest.load(manifest_path)
    except (ManifestError, OSError) as error:
        raise TrainerError(f"--probe-manifest {manifest_path}: {error}") from None
    torch_device = resolve_device(device or "cpu")
    failures: dict[str, str] = {}

    def batches() -> Iterable:
        return manifest_batches(config, manifest, manifest_path, failures.__setitem__, batch_size)

    per_seed = []
    cache: dict[str, Inference] = {}
    clips = 0
    for seed_dir in seeds:
        done = embed_seed(config, seed_dir, batches, torch_device, cache)
        clips = len(done.finetuned)
        probes = probe_seed(done, folds)
        per_seed.append(
            {"seed": seed_dir.seed}
            | {f"{model}_{label}": v for model, by in probes.items() for label, v in by.items()}
        )
    result = probe_summary(
        per_seed,
        {
            "run": run_dir.name,
            "manifest": str(manifest_path),
            "clips": clips,
            "failed": dict(sorted(failures.items())),
            "task": config.task,
            "adversarial_label": config.adversarial_label,
        },
    )
    json_path, md_path = run_dir.probe_files(manifest_path)
    write_json(json_path, result)
    write_text(md_path, probe_markdown(result, Path(manifest_path).stem))
    return result
