"""Evaluation of a finished run: test metrics, leakage probes, and the summary over seeds.

For every seed of ``runs/<name>/`` the selected model (``seed-<s>/best/``) embeds the test
split (view 0 only) once; from that one pass come

- the task head's predictions: accuracy, macro F1, UAR (macro recall), the per-class report
  and the confusion matrix (rows = true class, columns = predicted class);
- the adversarial head's accuracy on y-, reported as what it is: the accuracy of the head
  the encoder was trained to defeat, not a measure of disentanglement;
- linear probes (``trainer.probes``) of y+ and y- on the frozen embeddings, next to the same
  probes on the un-fine-tuned backbone and to chance level: the leakage measurement.

Each seed's numbers go to ``seed-<s>/evaluation.json`` (and its embeddings to
``seed-<s>/test_embeddings.npz`` for the t-SNE figures); ``summary.json`` and ``summary.md``
aggregate them over seeds as mean and **sample standard deviation (ddof=1)**; with a
single seed the standard deviation is undefined and written as null / "n/a".
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SUMMARY_SCHEMA_VERSION = 1
EVALUATION_FILE = "evaluation.json"
EMBEDDINGS_FILE = "test_embeddings.npz"
STD_NOTE = "sample standard deviation over seeds (ddof=1); null with a single seed"

# Headline metrics of a summary, in table order: (key, column title).
TASK_METRICS = (("accuracy", "Acc"), ("macro_f1", "F1"), ("uar", "UAR"))
PROBE_METRICS = (
    ("probe_task", "Probe y+"),
    ("probe_adv", "Probe y- (leakage)"),
    ("backbone_probe_task", "Backbone probe y+"),
    ("backbone_probe_adv", "Backbone probe y-"),
)
ADV_HEAD_METRIC = ("adv_head_accuracy", "Adv. head acc. (not a leakage measure)")


# ----- pure aggregation ---------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of finite ``values``; ``std`` is the sample
    standard deviation (ddof=1), None with fewer than two values; ``mean`` None when empty."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {
            "mean": None,
            "std": None,
            "n": 0,
            "values": [None if v is None else float(v) for v in values],
        }
    array = np.asarray(finite, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else None,
        "n": len(array),
        "values": [None if v is None else float(v) for v in values],
    }


def per_class_report(
    y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 (fractions) and support (clips) of every class in ``names``."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), labels=labels, zero_division=0
    )
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def confusion(y_true: Sequence[int], y_pred: Sequence[int], classes: int) -> list[list[int]]:
    """Confusion matrix (classes, classes) as nested lists: rows true, columns predicted."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(classes)))
    return matrix.astype(int).tolist()


def seed_record(
    seed: int,
    task_names: Sequence[str],
    adv_names: Sequence[str],
    y_task: Sequence[int],
    y_adv: Sequence[int],
    task_pred: Sequence[int],
    adv_pred: Sequence[int] | None,
    probes: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One seed's evaluation (what ``evaluation.json`` holds) from labels and predictions.

    ``probes`` maps ``"finetuned"`` / ``"backbone"`` to ``{"task": ProbeResult dict,
    "adv": ProbeResult dict}``.
    """
    from trainer.metrics import classification_metrics

    metrics = classification_metrics(y_task, task_pred)
    adv_acc = None
    if adv_pred is not None and len(y_adv):
        adv_acc = float(np.mean(np.asarray(adv_pred) == np.asarray(y_adv)))
    metrics["adv_head_accuracy"] = adv_acc
    return {
        "seed": int(seed),
        "test_clips": len(y_task),
        "labels": {"task": list(task_names), "adv": list(adv_names)},
        "metrics": metrics,
        "per_class": per_class_report(y_task, task_pred, task_names),
        "confusion_matrix": confusion(y_task, task_pred, len(task_names)),
        "probes": probes,
    }


def summarize(
    records: Sequence[dict[str, Any]], run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregate per-seed records (:func:`seed_record`) into the run summary.

    Headline metrics and probe balanced accuracies become ``{"mean", "std", "n", "values"}``
    (std = sample std, ddof=1); the per-class report is averaged the same way; confusion
    matrices are summed over seeds (each seed tests the same split size, so the sum counts
    every test decision made) and also kept per seed.
    """
    if not records:
        raise ValueError("no seed to summarise")
    records = sorted(records, key=lambda r: r["seed"])
    task_names = records[0]["labels"]["task"]
    adv_names = records[0]["labels"]["adv"]

    def probe_value(record: dict[str, Any], model: str, label: str) -> float | None:
        probe = record.get("probes", {}).get(model, {}).get(label)
        return None if probe is None else probe["balanced_accuracy"]

    metrics: dict[str, Any] = {}
    for key, _ in (*TASK_METRICS, ADV_HEAD_METRIC):
        metrics[key] = mean_std([r["metrics"].get(key) for r in records])
    for key, model, label in (
        ("probe_task", "finetuned", "task"),
        ("probe_adv", "finetuned", "adv"),
        ("backbone_probe_task", "backbone", "task"),
        ("backbone_probe_adv", "backbone", "adv"),
        ("labels_only_probe_adv", "labels_only", "adv"),
    ):
        metrics[key] = mean_std([probe_value(r, model, label) for r in records])

    def chance(label: str, names: Sequence[str]) -> float:
        for record in records:
            probe = record.get("probes", {}).get("finetuned", {}).get(label)
            if probe is not None and probe.get("chance") is not None:
                return float(probe["chance"])
        return 1.0 / len(names) if names else float("nan")

    per_class = {
        name: {
            field: mean_std([r["per_class"][name][field] for r in records])
            for field in ("precision", "recall", "f1")
        }
        | {"support": int(sum(r["per_class"][name]["support"] for r in records))}
        for name in task_names
    }
    matrices = [np.asarray(r["confusion_matrix"], dtype=np.int64) for r in records]
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        **(run_info or {}),
        "seeds": [r["seed"] for r in records],
        "std": STD_NOTE,
        "labels": {"task": list(task_names), "adv": list(adv_names)},
        "metrics": metrics,
        "chance": {"task": chance("task", task_names), "adv": chance("adv", adv_names)},
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(task_names),
            "rows": "true class",
            "columns": "predicted class",
            "summed_over_seeds": np.sum(matrices, axis=0).astype(int).tolist(),
            "per_seed": {str(r["seed"]): r["confusion_matrix"] for r in records},
        },
    }


def markdown_cell(value: Any) -> str:
    """``value`` as text that stays inside one Markdown table cell.

    Labels and run names come from users' files: ``|`` would split the cell and a newline
    would end the row. Backslashes and ``|`` are escaped, line breaks become ``<br>``, and
    ``& < >`` become HTML entities so that the cell shows the text as written.
    """
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def format_mean_std(stat: dict[str, Any] | None, percent: bool = True) -> str:
    """``"61.25 ± 1.30"`` (percent, 2 decimals); ``"61.25 ± n/a"`` with one seed; ``"–"``
    when there is no value."""
    if not stat or stat.get("mean") is None:
        return "–"
    scale = 100.0 if percent else 1.0
    mean = f"{stat['mean'] * scale:.2f}"
    std = "n/a" if stat.get("std") is None else f"{stat['std'] * scale:.2f}"
    return f"{mean} ± {std}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: headline metrics, leakage probes, per-class report and the
    summed confusion matrix. Percentages; ± is the sample standard deviation (ddof=1)."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    task = summary.get("task", "y+")
    adv = summary.get("adversarial_label", "y-")
    metrics = summary["metrics"]
    lines = [
        f"# Run {summary.get('run', '')}".rstrip(),
        "",
        f"Task y+ = {task}, discarded label y- = {adv}; seeds {seeds}. "
        f"Values in %, mean ± {STD_NOTE}.",
        "",
        "## Test set (task head)",
        "",
        "| Acc | F1 (macro) | UAR |",
        "|---|---|---|",
        "| " + " | ".join(format_mean_std(metrics[k]) for k, _ in TASK_METRICS) + " |",
        "",
        "## Leakage: linear probes on frozen test embeddings (view 0)",
        "",
        "Balanced accuracy of a logistic-regression probe (stratified cross-validation). "
        f"Chance: y+ {100 * summary['chance']['task']:.2f}, "
        f"y- {100 * summary['chance']['adv']:.2f}. "
        "Lower y- probe accuracy = less of the discarded label left in the embedding. "
        "When y+ and y- are correlated, the y+ label alone already predicts y- to some "
        "degree (row 'y+ label alone'): that, not chance, is the level an embedding that "
        "knows only y+ would reach.",
        "",
        "| Model | Probe y+ | Probe y- (leakage) |",
        "|---|---|---|",
        f"| fine-tuned | {format_mean_std(metrics['probe_task'])} | "
        f"{format_mean_std(metrics['probe_adv'])} |",
        f"| un-fine-tuned backbone | {format_mean_std(metrics['backbone_probe_task'])} | "
        f"{format_mean_std(metrics['backbone_probe_adv'])} |",
        f"| y+ label alone (no audio) | – | "
        f"{format_mean_std(metrics.get('labels_only_probe_adv'))} |",
        f"| chance | {100 * summary['chance']['task']:.2f} | "
        f"{100 * summary['chance']['adv']:.2f} |",
        "",
        f"Adversarial head accuracy on y- (the head the encoder was trained to defeat; "
        f"not a measure of disentanglement): {format_mean_std(metrics['adv_head_accuracy'])}.",
        "",
        "## Per-class report (task head)",
        "",
        "| Class | Precision | Recall | F1 | Support (all seeds) |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary["per_class"].items():
        lines.append(
            f"| {markdown_cell(name)} | {format_mean_std(row['precision'])} | "
            f"{format_mean_std(row['recall'])} "
            f"| {format_mean_std(row['f1'])} | {row['support']} |"
        )
    matrix = summary["confusion_matrix"]
    names = matrix["labels"]
    lines += [
        "",
        "## Confusion matrix (summed over seeds; rows true, columns predicted)",
        "",
        "| true \\ predicted | " + " | ".join(markdown_cell(n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, row in zip(names, matrix["summed_over_seeds"], strict=True):
        lines.append(f"| {markdown_cell(name)} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically (temp file + rename); NaN becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_nan_to_none(data), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


# ----- evaluating a finished run -------------------------------------------------------------
def load_run_config(run: str | os.PathLike[str]):
    """The :class:`~trainer.config.TrainConfig` of run folder ``run`` (its ``config.json``,
    without the keys the trainer adds for information)."""
    from trainer.config import TrainConfig
    from trainer.errors import TrainerError

    path = Path(run) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainerError(f"{run}: not a run folder (no config.json)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise TrainerError(f"{path}: unreadable ({error})") from None
    fields = set(TrainConfig.__dataclass_fields__)
    return TrainConfig.from_dict({k: v for k, v in data.items() if k in fields}), data


def run_info(run: str | os.PathLike[str], config: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """What a summary says about the run it describes (for the report's grouping)."""
    from pipeline.manifest import Manifest

    try:
        dataset = Manifest.load(config.manifest).dataset
    except Exception:  # the report must still work when the manifest has moved
        dataset = Path(config.manifest).stem
    return {
        "run": Path(run).name,
        "dataset": dataset,
        "task": config.task,
        "adversarial_label": config.adversarial_label,
        "backbone": config.backbone,
        "view_kind": config.view_kind,
        "views": raw.get("resolved_views", config.views),
        "adversary": config.adversary,
        "grl_objective": config.grl_objective,
        "lambda_reg": config.lambda_reg,
        "lambda_grl": config.lambda_grl,
        "grl_alpha": config.grl_alpha,
    }


def evaluate_seed(
    run: Path,
    config: Any,
    plan: Any,
    seed: int,
    device: Any,
    backbone_cache: dict[str, dict[str, Any]],
    folds: int = 5,
) -> dict[str, Any]:
    """Evaluate ``run/seed-<seed>``: one test pass of the selected model (view 0), one of
    the un-fine-tuned backbone, probes on both; writes ``evaluation.json`` and
    ``test_embeddings.npz`` there and returns the record."""
    from pipeline.rng import stable_seed
    from trainer.embed import load_finished_model
    from trainer.loop import Distributed, build_model, eval_loader, predict
    from trainer.probes import label_only_probe, label_probes

    seed_dir = run / f"seed-{seed}"
    single = Distributed()
    model, _ = load_finished_model(seed_dir, device)
    test = predict(model, eval_loader(config, plan, "test", single), device, single)
    del model
    # The un-fine-tuned starting point: the same weights training started from (a
    # pretrained backbone is the same for every seed; the tiny one is drawn per seed).
    key = config.backbone if config.backbone != "tiny" else f"tiny/{seed}"
    if key not in backbone_cache:
        start = build_model(config, plan, seed).to(device)
        backbone_cache[key] = predict(
            start, eval_loader(config, plan, "test", single), device, single
        )
        del start
    initial = backbone_cache[key]
    if initial["clip_ids"] != test["clip_ids"]:
        raise RuntimeError("backbone and fine-tuned passes saw different test clips")

    probe_seed = stable_seed(seed, "probe") % (2**32)
    probes = {
        name: {
            label: result.to_dict()
            for label, result in label_probes(
                embeddings, test["y_task"], test["y_adv"], folds=folds, seed=probe_seed
            ).items()
        }
        for name, embeddings in (
            ("finetuned", test["embeddings"]),
            ("backbone", initial["embeddings"]),
        )
    }
    probes["labels_only"] = {
        "adv": label_only_probe(test["y_task"], test["y_adv"], folds, probe_seed).to_dict()
    }
    record = seed_record(
        seed,
        plan.task_names,
        plan.adv_names,
        test["y_task"],
        test["y_adv"],
        test["task_pred"],
        test["adv_pred"] or None,
        probes,
    )
    trained = seed_dir / "test_metrics.json"
    if trained.is_file():
        saved = json.loads(trained.read_text(encoding="utf-8"))
        record["best_epoch"] = saved.get("best_epoch")
        record["val_acc_task"] = saved.get("val_acc_task")
    write_json(seed_dir / EVALUATION_FILE, record)
    np.savez(
        seed_dir / EMBEDDINGS_FILE,
        clip_ids=np.array(test["clip_ids"], dtype=str),
        y_task=np.asarray(test["y_task"], dtype=np.int64),
        y_adv=np.asarray(test["y_adv"], dtype=np.int64),
        embeddings=np.asarray(test["embeddings"], dtype=np.float32),
        backbone_embeddings=np.asarray(initial["embeddings"], dtype=np.float32),
    )
    return record


def seeds_of(run: Path) -> list[int]:
    """Seeds with a finished model (``seed-<s>/best/``), ascending."""
    from trainer.embed import seed_dirs

    return [int(p.name.split("-", 1)[1]) for p in seed_dirs(run)]


def evaluate_run(
    run: str | os.PathLike[str],
    device: str | None = None,
    folds: int = 5,
    figures: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate every finished seed of ``run`` (reusing a seed's ``evaluation.json`` when it
    is newer than its selected model, unless ``force``), write ``summary.json`` and
    ``summary.md`` and, with ``figures``, the PNGs under ``run/figures/``. Returns the
    summary."""
    import torch

    from trainer.errors import TrainerError
    from trainer.loop import plan_run, resolve_device

    run = Path(run)
    config, raw = load_run_config(run)
    seeds = seeds_of(run)
    if not seeds:
        raise TrainerError(f"{run}: no finished seed (seed-*/best/); train it first")
    torch_device = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = None
    cache: dict[str, dict[str, Any]] = {}
    records = []
    for seed in seeds:
        path = run / f"seed-{seed}" / EVALUATION_FILE
        best = run / f"seed-{seed}" / "best" / "model.json"
        fresh = path.is_file() and path.stat().st_mtime >= best.stat().st_mtime
        if fresh and not force:
            records.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        if plan is None:
            plan = plan_run(config.replace(out=str(run)))
        records.append(evaluate_seed(run, config, plan, seed, torch_device, cache, folds))
    summary = summarize(records, run_info(run, config, raw))
    write_json(run / "summary.json", summary)
    write_text(run / "summary.md", summary_markdown(summary))
    if figures:
        write_figures(run, seeds[0], summary)
    return summary


def write_figures(run: Path, seed: int, summary: dict[str, Any]) -> list[Path]:
    """Figures 4-9 for one seed of ``run``: loss and accuracy curves, and t-SNE of the test
    embeddings coloured by each label, for the un-fine-tuned backbone and the fine-tuned
    model. Written under ``run/figures/``."""
    from trainer import plots

    seed_dir = run / f"seed-{seed}"
    folder = run / "figures"
    written = []
    metrics = seed_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = plots.read_metrics(metrics)
        if rows:
            name = f"{run.name} (seed {seed})"
            written.append(plots.plot_loss_curves(rows, folder / "loss_curves.png", name))
            written.append(plots.plot_accuracy_curves(rows, folder / "accuracy_curves.png", name))
    data = np.load(seed_dir / EMBEDDINGS_FILE)
    if len(data["clip_ids"]) >= 4:
        labels = {"task": data["y_task"], "adv": data["y_adv"]}
        names = {"task": summary["labels"]["task"], "adv": summary["labels"]["adv"]}
        label_name = {
            "task": summary.get("task", "y+"),
            "adv": summary.get("adversarial_label", "y-"),
        }
        for model_name, key in (("backbone", "backbone_embeddings"), ("finetuned", "embeddings")):
            points = plots.tsne_2d(data[key], seed=seed)
            for which in ("task", "adv"):
                title = f"{model_name}: test embeddings coloured by {label_name[which]}"
                out = folder / f"tsne_{model_name}_{label_name[which]}.png"
                written.append(plots.plot_tsne(points, labels[which], names[which], out, title))
    return written


def ensure_summary(run: str | os.PathLike[str], device: str | None = None) -> dict[str, Any]:
    """``run/summary.json``, evaluating the run first when it has none."""
    path = Path(run) / "summary.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return evaluate_run(run, device=device)


def probe_on_manifest(
    run: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    device: str | None = None,
    folds: int = 5,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Leakage measured on another corpus: embed every clip of ``manifest_path`` (view 0,
    from shards or source audio) with each seed's fine-tuned model and with its
    un-fine-tuned starting point, and probe both labels there.

    On a test split where y+ and y- are strongly correlated, a y- probe cannot tell "knows
    y-" from "knows y+"; on a corpus where the two are independent (e.g. the synthetic
    generator with ``entanglement 0``) it can. Writes ``run/probe-<manifest stem>.json`` and
    ``.md``; returns the dict (mean and sample std over seeds, ddof=1).
    """
    from types import SimpleNamespace

    from pipeline.manifest import Manifest, ManifestError
    from pipeline.rng import stable_seed
    from trainer.embed import embed_audio, iter_original_audio, load_finished_model
    from trainer.errors import TrainerError
    from trainer.loop import build_model, resolve_device
    from trainer.probes import label_only_probe, label_probes

    run = Path(run)
    config, _ = load_run_config(run)
    seeds = seeds_of(run)
    if not seeds:
        raise TrainerError(f"{run}: no finished seed (seed-*/best/); train it first")
    try:
        manifest = Manifest.load(manifest_path)
    except (ManifestError, OSError) as error:
        raise TrainerError(f"--probe-manifest {manifest_path}: {error}") from None
    torch_device = resolve_device(device or "cpu")
    failures: dict[str, str] = {}
    read = {
        item.clip_id: item
        for item in iter_original_audio(
            manifest, manifest_path, [c.id for c in manifest.clips], failures.__setitem__
        )
    }
    clips = [c for c in manifest.clips if c.id in read]
    task_index = manifest.label_index(config.task)
    adv_index = manifest.label_index(config.adversarial_label)
    y_task = np.array([task_index[getattr(c, config.task)] for c in clips])
    y_adv = np.array([adv_index[getattr(c, config.adversarial_label)] for c in clips])
    audio = [read[c.id] for c in clips]

    per_seed = []
    cache: dict[str, np.ndarray] = {}
    for seed in seeds:
        model, info = load_finished_model(run / f"seed-{seed}", torch_device)
        finetuned, _ = embed_audio(model, audio, batch_size, config.max_seconds, torch_device)
        key = config.backbone if config.backbone != "tiny" else f"tiny/{seed}"
        if key not in cache:
            names = SimpleNamespace(task_names=info["task_names"], adv_names=info["adv_names"])
            start = build_model(config, names, seed).to(torch_device)
            cache[key], _ = embed_audio(start, audio, batch_size, config.max_seconds, torch_device)
        probe_seed = stable_seed(seed, "probe") % (2**32)
        record = {"seed": seed}
        for name, embeddings in (("finetuned", finetuned), ("backbone", cache[key])):
            for label, result in label_probes(embeddings, y_task, y_adv, folds, probe_seed).items():
                record[f"{name}_{label}"] = result.to_dict()
        record["labels_only_adv"] = label_only_probe(y_task, y_adv, folds, probe_seed).to_dict()
        per_seed.append(record)
    keys = [k for k in per_seed[0] if k != "seed"]
    result = {
        "run": run.name,
        "manifest": str(manifest_path),
        "clips": len(clips),
        "failed": failures,
        "task": config.task,
        "adversarial_label": config.adversarial_label,
        "std": STD_NOTE,
        "probes": {k: mean_std([r[k]["balanced_accuracy"] for r in per_seed]) for k in keys},
        "chance": {
            "task": per_seed[0]["finetuned_task"]["chance"],
            "adv": per_seed[0]["finetuned_adv"]["chance"],
        },
        "per_seed": per_seed,
    }
    stem = Path(manifest_path).stem
    write_json(run / f"probe-{stem}.json", result)
    p = result["probes"]
    lines = [
        f"# Probes of run {run.name} on {stem} ({len(clips)} clips)",
        "",
        f"Balanced accuracy in %, mean ± {STD_NOTE}.",
        "",
        f"| Model | Probe y+ ({markdown_cell(config.task)}) | "
        f"Probe y- ({markdown_cell(config.adversarial_label)}) |",
        "|---|---|---|",
        f"| fine-tuned | {format_mean_std(p['finetuned_task'])} | "
        f"{format_mean_std(p['finetuned_adv'])} |",
        f"| un-fine-tuned backbone | {format_mean_std(p['backbone_task'])} | "
        f"{format_mean_std(p['backbone_adv'])} |",
        f"| y+ label alone | – | {format_mean_std(p['labels_only_adv'])} |",
        f"| chance | {100 * result['chance']['task']:.2f} | {100 * result['chance']['adv']:.2f} |",
    ]
    write_text(run / f"probe-{stem}.md", "\n".join(lines) + "\n")
    return result
