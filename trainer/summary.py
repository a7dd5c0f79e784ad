"""Statistics and Markdown of an evaluation: no torch, no files (testable alone). Records
in, records out (``trainer/records.py``; ``trainer/rundir.py`` reads and writes them).

- :func:`seed_record`: one seed's test record (``EvaluationRecord``, ``evaluation.json``)
  from labels and predictions: accuracy, macro F1, UAR, the per-class report, the
  confusion matrix (rows = true class, columns = predicted class), the adversarial head's
  accuracy and the probes;
- :func:`summarize`: records over seeds (``SummaryRecord``, ``summary.json``) as mean and
  **sample standard deviation (ddof=1)**; with a single seed the standard deviation is
  undefined and written as null / "n/a". Beside it, ``ci95``: a bootstrap 95 % interval of
  the mean over seeds, each seed's test clips resampled
  (``trainer.probes.bootstrap_interval``): how much the figure would move with another
  test sample, training held fixed. The summary also says which split selected the epoch,
  by which metric, and how the splits were drawn;
- :func:`summary_markdown`, :func:`probe_markdown`, :func:`format_mean_std`: the Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.rng import stable_seed
from trainer.records import (
    STD_NOTE,
    ClassScores,
    ClassSummary,
    EvaluationRecord,
    ProbeReport,
    RunInfo,
    Selection,
    SelectionSummary,
    SplitsSummary,
    Stat,
    SummaryRecord,
)

# Headline metrics of a summary, in table order: (key, column title).
TASK_METRICS = (("accuracy", "Acc"), ("macro_f1", "F1"), ("uar", "UAR"))
PROBE_METRICS = (
    ("probe_task", "Probe y+"),
    ("probe_adv", "Probe y- (leakage)"),
    ("backbone_probe_task", "Backbone probe y+"),
    ("backbone_probe_adv", "Backbone probe y-"),
)
ADV_HEAD_METRIC = ("adv_head_accuracy", "Adv. head acc. (not a leakage measure)")
# Summary key, probe record (evaluation.json "probes") and label of every held-out probe
# (fitted on train, scored on test); the within-test cross-validated ones add "_cv".
PROBES = (
    ("probe_task", "finetuned", "task"),
    ("probe_adv", "finetuned", "adv"),
    ("backbone_probe_task", "backbone", "task"),
    ("backbone_probe_adv", "backbone", "adv"),
    ("labels_only_probe_adv", "labels_only", "adv"),
)


def mean_std(values: Sequence[float | None]) -> Stat:
    """The :class:`~trainer.records.Stat` of finite ``values``: ``std`` is the sample
    standard deviation (ddof=1), None with fewer than two values; ``mean`` None when empty."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    listed = tuple(None if v is None else float(v) for v in values)
    if not finite:
        return Stat(None, None, 0, listed)
    array = np.asarray(finite, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return Stat(float(array.mean()), std, len(array), listed)


def per_class_report(
    y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str]
) -> dict[str, ClassScores]:
    """Precision, recall, F1 (fractions) and support (clips) of every class in ``names``."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(y_true), np.asarray(y_pred), labels=labels, zero_division=0
    )
    return {
        name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
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
) -> EvaluationRecord:
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
    return EvaluationRecord(
        seed=int(seed),
        test_clips=len(y_task),
        task_names=tuple(task_names),
        adv_names=tuple(adv_names),
        metrics=metrics,
        per_class=per_class_report(y_task, task_pred, task_names),
        confusion_matrix=tuple(map(tuple, confusion(y_task, task_pred, len(task_names)))),
        probes=probes,
    )


def summarize(
    records: Sequence[EvaluationRecord], run_info: RunInfo | dict[str, Any] | None = None
) -> SummaryRecord:
    """Aggregate per-seed records (:func:`seed_record`) into the run summary.

    Headline metrics and probe balanced accuracies become :class:`Stat` (std = sample std,
    ddof=1); the per-class report is averaged the same way; confusion matrices are summed
    over seeds (each seed tests the same split size, so the sum counts every test decision
    made) and also kept per seed.
    """
    if not records:
        raise ValueError("no seed to summarise")
    records = sorted(records, key=lambda r: r.seed)
    task_names = records[0].task_names
    adv_names = records[0].adv_names
    info = run_info if isinstance(run_info, RunInfo) else RunInfo(**(run_info or {}))

    from trainer.metrics import accuracy, macro_f1, uar

    metrics: dict[str, Stat] = {}
    task_metric = {"accuracy": accuracy, "macro_f1": macro_f1, "uar": uar}
    for key, _ in (*TASK_METRICS, ADV_HEAD_METRIC):
        metrics[key] = mean_std([r.metrics.get(key) for r in records])
        if key in task_metric:
            groups = clip_groups(records, "y_task", None)
            metrics[key] = metrics[key].with_interval(
                pooled_interval(groups, task_metric[key], key)
            )
    for key, model, label in PROBES:
        metrics[key] = mean_std([r.probe_score(model, label) for r in records])
        groups = clip_groups(records, f"y_{label}", f"{model}_{label}")
        metrics[key] = metrics[key].with_interval(pooled_interval(groups, uar, key))
        metrics[f"{key}_cv"] = mean_std([r.probe_score(f"{model}_cv", label) for r in records])

    def chance(label: str, names: Sequence[str]) -> float:
        for record in records:
            probe = record.probes.get("finetuned", {}).get(label)
            if probe is not None and probe.get("chance") is not None:
                return float(probe["chance"])
        return 1.0 / len(names) if names else float("nan")

    per_class = {
        name: ClassSummary(
            *(
                mean_std([getattr(r.per_class[name], field) for r in records])
                for field in ("precision", "recall", "f1")
            ),
            support=int(sum(r.per_class[name].support for r in records)),
        )
        for name in task_names
    }
    matrices = [np.asarray(r.confusion_matrix, dtype=np.int64) for r in records]
    perturbation = perturbation_summary(records)
    if perturbation is not None:
        metrics.update(perturbation[2])
    if any(r.adversary for r in records):
        for key, name in ADVERSARY_METRICS:
            metrics[key] = mean_std(
                [None if r.adversary is None else getattr(r.adversary, name) for r in records]
            )
    summed = np.sum(matrices, axis=0).astype(int).tolist()
    return SummaryRecord(
        info=info,
        seeds=tuple(r.seed for r in records),
        selection=selection_of(records),
        splits=splits_of(records),
        task_names=tuple(task_names),
        adv_names=tuple(adv_names),
        metrics=metrics,
        chance_task=chance("task", task_names),
        chance_adv=chance("adv", adv_names),
        per_class=per_class,
        confusion=tuple(map(tuple, summed)),
        confusion_per_seed={str(r.seed): r.confusion_matrix for r in records},
        perturbation=None if perturbation is None else perturbation[:2],
    )


# Summary key, model and figure of the invariance record (evaluation.json "perturbation").
PERTURBATION_METRICS = (
    ("transfer_task", "finetuned", "task"),
    ("transfer_adv", "finetuned", "adv"),
    ("view_shift", "finetuned", None),
    ("backbone_transfer_task", "backbone", "task"),
    ("backbone_transfer_adv", "backbone", "adv"),
    ("backbone_view_shift", "backbone", None),
)
# Summary key and field of the adversary's instruments (evaluation.json "adversary").
ADVERSARY_METRICS = (
    ("adversary_fit_head", "head"),
    ("adversary_fit_probe", "probe"),
    ("adversary_grad_share", "grad_share"),
)
# The adversary is "far behind" when a linear probe on the same embeddings reads y- this
# much better (fraction; as trainer.adversary.BEHIND, which this torch-free module mirrors).
ADVERSARY_BEHIND = 0.20


def perturbation_summary(
    records: Sequence[EvaluationRecord],
) -> tuple[str, int, dict[str, Stat]] | None:
    """``(kind, views, metrics)`` over the seeds' invariance records (None when no seed
    has one, e.g. evaluations from before it was recorded)."""
    found = [r.perturbation for r in records]
    first = next((p for p in found if p), None)
    if first is None:
        return None

    def value(p: Any, model: str, label: str | None) -> float | None:
        if not p:
            return None
        entry = getattr(p, model)
        return entry.view_shift if label is None else getattr(entry, f"{label}_transfer")

    return (
        first.kind,
        first.views,
        {
            key: mean_std([value(p, model, label) for p in found])
            for key, model, label in PERTURBATION_METRICS
        },
    )


def markdown_cell(value: Any) -> str:
    """``value`` as text that stays inside one Markdown table cell.

    Labels and run names come from users' files: ``|`` would split the cell and a newline
    would end the row. Backslashes and ``|`` are escaped, line breaks become ``<br>``, and
    ``& < >`` become HTML entities so that the cell shows the text as written.
    """
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")


def clip_groups(
    records: Sequence[EvaluationRecord], truth: str, prediction: str | None
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per seed ``(truth, prediction)`` over its test clips from ``record["clips"]``
    (``prediction``: a probe key of ``probe_pred``, None for the task head); clips a probe
    could not score (-1) are left out. None when a record lacks them (older evaluations)."""
    groups = []
    for record in records:
        clips = record.clips
        if not clips:
            return None
        y = np.asarray(getattr(clips, truth), dtype=np.int64)
        if prediction is None:
            pred = np.asarray(clips.task_pred, dtype=np.int64)
        else:
            if prediction not in clips.probe_pred:
                return None
            pred = np.asarray(clips.probe_pred[prediction], dtype=np.int64)
        scored = pred >= 0
        groups.append((y[scored], pred[scored]))
    return groups


def pooled_interval(
    groups: list[tuple[np.ndarray, np.ndarray]] | None,
    metric: Callable[[np.ndarray, np.ndarray], float],
    name: str,
) -> list[float] | None:
    """``[low, high]`` of the mean of ``metric`` over seeds, test clips resampled per seed
    (generator seeded from ``name``); None without clips."""
    from trainer.probes import bootstrap_interval

    if not groups or any(len(g[0]) == 0 for g in groups):
        return None
    _, low, high = bootstrap_interval(groups, metric, seed=stable_seed("summary-ci", name))
    return None if not (math.isfinite(low) and math.isfinite(high)) else [low, high]


def selection_of(records: Sequence[EvaluationRecord]) -> SelectionSummary:
    """Which split selected each seed's epoch, by which metric; ``split`` is the common
    value (``mixed`` when seeds differ, None when no record says: older evaluations)."""
    per_seed = {str(r.seed): r.selection or Selection(None, None) for r in records}

    def common(field: str) -> str | None:
        values = {getattr(s, field) for s in per_seed.values()}
        return values.pop() if len(values) == 1 else "mixed"

    return SelectionSummary(common("split"), common("metric"), per_seed)


def splits_of(records: Sequence[EvaluationRecord]) -> SplitsSummary:
    """How each seed's split was drawn (``pipeline.splits.SeedSplit.describe``)."""
    per_seed = {str(r.seed): r.split for r in records}
    first = next((v for v in per_seed.values() if v), None) or {}
    return SplitsSummary(first.get("mode"), first.get("protocol"), first.get("stratify"), per_seed)


def format_interval(stat: Stat | None) -> str:
    """``"[58.10, 64.02]"`` (percent) from a stat's ``ci95``; ``"–"`` without one."""
    interval = None if stat is None else stat.ci95
    if not interval:
        return "–"
    return f"[{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]"


def selection_sentence(summary: SummaryRecord) -> str:
    """How the epoch was selected and the splits drawn, in one sentence for a reader."""
    splits = summary.splits
    split, metric = summary.selection.split, summary.selection.metric or "accuracy"
    if split == "val":
        chosen = f"Epoch selected on the validation split by {metric}."
    elif split == "test":
        chosen = (
            f"**Epoch selected on the test split by {metric} (paper protocol): the test "
            "figures are optimistic.**"
        )
    elif split == "mixed":
        chosen = "**Seeds selected their epoch on different splits (see summary.json).**"
    else:
        chosen = "Selection split not recorded (evaluated before it was)."
    if splits.mode == "per-seed":
        drawn = (
            f"Each seed drew its own split (protocol {splits.protocol}, stratified "
            f"on {splits.stratify})."
        )
    elif splits.mode == "fixed":
        drawn = (
            f"Every seed used the manifest's split (protocol {splits.protocol}, "
            f"stratified on {splits.stratify})."
        )
    else:
        drawn = "Every seed used the manifest's split (run from before splits were recorded)."
    return f"{chosen} {drawn}"


def format_mean_std(stat: Stat | None, percent: bool = True) -> str:
    """``"61.25 ± 1.30"`` (percent, 2 decimals); ``"61.25 ± n/a"`` with one seed; ``"–"``
    when there is no value."""
    if stat is None or stat.mean is None:
        return "–"
    scale = 100.0 if percent else 1.0
    mean = f"{stat.mean * scale:.2f}"
    std = "n/a" if stat.std is None else f"{stat.std * scale:.2f}"
    return f"{mean} ± {std}"


def perturbation_markdown(summary: SummaryRecord) -> list[str]:
    """The invariance section of :func:`summary_markdown` (no lines without the record)."""
    if summary.perturbation is None:
        return []
    kind, views = summary.perturbation
    metrics = summary.metrics
    return [
        f"## Invariance to the {kind} perturbation (test split, views 1-{views})",
        "",
        "The same held-out probes, fitted on the training split's originals, scored on the "
        "test clips' perturbed views instead of their originals; view shift: how far a "
        "clip's views lie from its original in units of the spread between the y- classes' "
        "centroids (0 = invariant; 1 = a view moves a clip by a whole y- difference, so the "
        "encoder is not invariant where y- lives). A perturbation that removes y- "
        "takes the y- probe down on views; an encoder that has become invariant to it "
        "scores on originals what it scores on views, and then carries only what the views "
        'keep (docs/evaluation.md, "Where the information is").',
        "",
        "| Model | Probe y+, originals | y+, views | Probe y-, originals | y-, views "
        "| View shift (y- spreads) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {title} | {format_mean_std(metrics.get(f'{p}probe_task'))} | "
            f"{format_mean_std(metrics.get(f'{p}transfer_task'))} | "
            f"{format_mean_std(metrics.get(f'{p}probe_adv'))} | "
            f"{format_mean_std(metrics.get(f'{p}transfer_adv'))} | "
            f"{format_mean_std(metrics.get(f'{p}view_shift'), percent=False)} |"
            for title, p in (("fine-tuned", ""), ("un-fine-tuned backbone", "backbone_"))
        ),
        "",
    ]


def recipe_lines(summary: SummaryRecord) -> list[str]:
    """One sentence naming the training recipe and the adversary's settings (none for
    summaries from before recipes, or without an adversary)."""
    info = summary.info
    recipe = info.recipe
    if recipe is None or info.adversary is False:
        return []
    if info.adv_lr is None:
        own = "in the backbone's optimizer and schedule"
    else:
        own = (
            f"own AdamW at lr {info.adv_lr:g}, {info.adv_steps} update(s) per "
            "step on the detached embedding"
        )
    return [
        f"Recipe {markdown_cell(recipe)}: the adversary {own}, input "
        f"{markdown_cell(info.adv_input)}, conditioning "
        f'{markdown_cell(info.adv_condition)} (docs/training.md, "Recipes").',
        "",
    ]


def adversary_markdown(summary: SummaryRecord) -> list[str]:
    """The adversary's competence section of :func:`summary_markdown` (none without it)."""
    metrics = summary.metrics
    head, probe = metrics.get("adversary_fit_head"), metrics.get("adversary_fit_probe")
    if head is None or head.mean is None:
        return []
    adv = recorded(summary.info.adversarial_label, "y-")
    lines = [
        "## Adversary competence (training split, selected model)",
        "",
        f"What the adversary reads of y- ({markdown_cell(adv)}) on the training clips it was "
        "trained on, next to a standardised linear probe fitted and scored on the same "
        "embeddings; and the reversed gradient's norm at the embedding over the task CE's "
        "(mean over the selected epoch's batches; the linear eraser's included when it is "
        "on). An adversary far below the probe sends the encoder a reversed gradient that "
        "carries little of the y- information there is: the reversal then removes little; "
        'the linear eraser does not depend on it (docs/training.md, "Recipes").',
        "",
        "| Adversary, training clips | Linear probe, same clips | Reversed / CE gradient |",
        "|---|---|---|",
        f"| {format_mean_std(head)} | {format_mean_std(probe)} | "
        f"{format_mean_std(metrics.get('adversary_grad_share'), percent=False)} |",
        "",
    ]
    if probe is not None and probe.mean is not None and probe.mean - head.mean > ADVERSARY_BEHIND:
        lines += [
            f"**Warning: the adversary reads the {markdown_cell(adv)} at "
            f"{100 * head.mean:.0f} %, a linear probe at {100 * probe.mean:.0f} %: the "
            "reversal removes little.**",
            "",
        ]
    return lines


def summary_markdown(summary: SummaryRecord) -> str:
    """The summary as Markdown: headline metrics, leakage probes, per-class report and the
    summed confusion matrix. Percentages; ± is the sample standard deviation (ddof=1)."""
    seeds = ", ".join(str(s) for s in summary.seeds)
    task = recorded(summary.info.task, "y+")
    adv = recorded(summary.info.adversarial_label, "y-")
    metrics = summary.metrics
    lines = [
        f"# Run {recorded(summary.info.run, '')}".rstrip(),
        "",
        f"Task y+ = {task}, discarded label y- = {adv}; seeds {seeds}. "
        f"Values in %, mean ± {STD_NOTE}; [low, high]: bootstrap 95 % interval of the mean "
        "over test clips (each seed's resampled; training held fixed).",
        "",
        selection_sentence(summary),
        "",
        *recipe_lines(summary),
        "## Test set (task head)",
        "",
        "| | Acc | F1 (macro) | UAR |",
        "|---|---|---|---|",
        "| mean ± std | " + " | ".join(format_mean_std(metrics[k]) for k, _ in TASK_METRICS) + " |",
        "| 95 % interval | "
        + " | ".join(format_interval(metrics[k]) for k, _ in TASK_METRICS)
        + " |",
        "",
        "## Leakage: linear probes on frozen embeddings (view 0)",
        "",
        "Balanced accuracy (mean recall over the test classes) of a logistic-regression probe "
        "fitted on the training split's embeddings and scored on the test split; the last two "
        "columns cross-validate a probe inside the test split instead (secondary, noisier). "
        f"Chance: y+ {100 * summary.chance_task:.2f}, "
        f"y- {100 * summary.chance_adv:.2f}. "
        "Lower y- probe accuracy = less of the discarded label left in the embedding. "
        "When y+ and y- are correlated, the y+ label alone already predicts y- to some "
        "degree (row 'y+ label alone'): that, not chance, is the level an embedding that "
        "knows only y+ would reach.",
        "",
        "| Model | Probe y+ | 95 % interval | Probe y- (leakage) | 95 % interval "
        "| CV in test y+ | CV in test y- |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {title} | {format_mean_std(metrics.get(k_task))} | "
            f"{format_interval(metrics.get(k_task))} | {format_mean_std(metrics.get(k_adv))} | "
            f"{format_interval(metrics.get(k_adv))} | "
            f"{format_mean_std(metrics.get(f'{k_task}_cv'))} | "
            f"{format_mean_std(metrics.get(f'{k_adv}_cv'))} |"
            for title, k_task, k_adv in (
                ("fine-tuned", "probe_task", "probe_adv"),
                ("un-fine-tuned backbone", "backbone_probe_task", "backbone_probe_adv"),
                ("y+ label alone (no audio)", "-", "labels_only_probe_adv"),
            )
        ),
        f"| chance | {100 * summary.chance_task:.2f} | | {100 * summary.chance_adv:.2f} | | | |",
        "",
        f"Adversarial head accuracy on y- (the head the encoder was trained to defeat; "
        f"not a measure of disentanglement): {format_mean_std(metrics['adv_head_accuracy'])}.",
        "",
        *adversary_markdown(summary),
        *perturbation_markdown(summary),
        "## Per-class report (task head)",
        "",
        "| Class | Precision | Recall | F1 | Support (all seeds) |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.per_class.items():
        lines.append(
            f"| {markdown_cell(name)} | {format_mean_std(row.precision)} | "
            f"{format_mean_std(row.recall)} "
            f"| {format_mean_std(row.f1)} | {row.support} |"
        )
    names = summary.task_names
    lines += [
        "",
        "## Confusion matrix (summed over seeds; rows true, columns predicted)",
        "",
        "| true \\ predicted | " + " | ".join(markdown_cell(n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, row in zip(names, summary.confusion, strict=True):
        lines.append(f"| {markdown_cell(name)} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def recorded(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it is None (a summary field not recorded)."""
    return default if value is None else value


def probe_summary(
    per_seed: Sequence[dict[str, Any]],
    run_info: dict[str, Any],
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> ProbeReport:
    """Probes on another corpus over seeds: each ``per_seed`` record holds ``seed`` and
    probe dicts under ``finetuned_task``, ``finetuned_adv``, ``backbone_task``,
    ``backbone_adv`` and ``labels_only_adv`` (held out: fitted on its train split, scored
    on its test split) and the same with ``_cv_`` (inside its test split); their balanced
    accuracies become mean and sample std (ddof=1). ``groups``: per held-out key, per seed
    ``(truth, prediction)`` on the test clips, for the bootstrap ``ci95``. ``run_info``:
    the :class:`~trainer.records.ProbeReport`'s ``run``, ``manifest``, ``clips``,
    ``train_clips``, ``failed``, ``task`` and ``adversarial_label``."""
    from trainer.metrics import uar

    keys = [k for k in per_seed[0] if k != "seed"]
    probes = {}
    for key in keys:
        stat = mean_std([r[key]["balanced_accuracy"] for r in per_seed])
        scored = [(y[p >= 0], p[p >= 0]) for y, p in (groups or {}).get(key, [])]
        probes[key] = stat.with_interval(pooled_interval(scored or None, uar, key))
    return ProbeReport(
        **run_info,
        probes=probes,
        chance_task=per_seed[0]["finetuned_task"]["chance"],
        chance_adv=per_seed[0]["finetuned_adv"]["chance"],
        per_seed=tuple(per_seed),
    )


def probe_markdown(result: ProbeReport, corpus: str) -> str:
    """:func:`probe_summary`'s result as a Markdown table (balanced accuracy in %)."""
    p = result.probes

    def cells(key: str) -> str:
        return (
            f"{format_mean_std(p.get(key))} | {format_interval(p.get(key))} | "
            f"{format_mean_std(p.get(key.replace('_task', '_cv_task').replace('_adv', '_cv_adv')))}"
        )

    lines = [
        f"# Probes of run {result.run} on {corpus} ({result.train_clips} train, "
        f"{result.clips} test clips)",
        "",
        f"Balanced accuracy in %, mean ± {STD_NOTE}. Probes fitted on the corpus's train split "
        "and scored on its test split; [low, high]: bootstrap 95 % interval over its test "
        "clips; 'CV' columns: cross-validation inside its test split (secondary).",
        "",
        f"| Model | Probe y+ ({markdown_cell(result.task)}) | 95 % interval | CV y+ "
        f"| Probe y- ({markdown_cell(result.adversarial_label)}) | 95 % interval | CV y- |",
        "|---|---|---|---|---|---|---|",
        f"| fine-tuned | {cells('finetuned_task')} | {cells('finetuned_adv')} |",
        f"| un-fine-tuned backbone | {cells('backbone_task')} | {cells('backbone_adv')} |",
        f"| y+ label alone | – | | | {cells('labels_only_adv')} |",
        f"| chance | {100 * result.chance_task:.2f} | | | {100 * result.chance_adv:.2f} | | |",
    ]
    return "\n".join(lines) + "\n"
