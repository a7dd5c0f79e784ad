"""One Markdown table across runs, in the layout of the paper's Tables 1 and 2.

Rows are runs, columns are metrics (percent, mean ± sample std over seeds). Runs are grouped
by (dataset, task), one group heading per pair like the paper's model-family rows, and the
best value of each column within a group is **bold** (the second best underlined, as in
the paper). "Best" is the highest value, except for the y- probe (leakage), where the lowest
is best. Reference columns (backbone probes, chance, the adversarial head's accuracy) are
never marked: they describe the starting point or the training game, not the result.

A run whose epochs were selected on the test split (``--protocol paper``) is marked ``†``
and named under the table: its test figures are optimistic and do not compare with rows
selected on validation. With a baseline run (``report --baseline RUN``) a second table gives
each run's paired difference from it in task accuracy, y+ probe and y- probe (leakage),
over the seeds whose test clips the two runs share, with a paired bootstrap 95 % interval
(:func:`trainer.probes.paired_difference`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text
from pipeline.rng import stable_seed
from trainer.errors import TrainerError
from trainer.records import EvaluationRecord, Stat, SummaryRecord
from trainer.summary import STD_NOTE, format_mean_std, markdown_cell, recorded


@dataclass(frozen=True)
class Column:
    """One metric column: summary key, title, and how to rank it (None: never marked)."""

    key: str
    title: str
    best: str | None  # "max", "min" or None
    percent: bool = True  # False: a ratio shown as it is (the view shift)


COLUMNS = (
    Column("accuracy", "Acc", "max"),
    Column("macro_f1", "F1", "max"),
    Column("uar", "UAR", "max"),
    Column("probe_task", "Probe y+", "max"),
    Column("probe_adv", "Probe y- (leakage)", "min"),
    Column("backbone_probe_adv", "Backbone probe y-", None),
    Column("labels_only_probe_adv", "y- from y+ label", None),
    Column("chance_adv", "Chance y-", None),
    # How far the run's views move a test clip, in between-class spreads of y-.
    Column("view_shift", "View shift (y- spreads)", None, percent=False),
    Column("adv_head_accuracy", "Adv. head acc.", None),
    # The adversary's instruments (trainer/adversary.py): what it reads of y- on its own
    # training clips against a linear probe on the same clips (runs without an adversary:
    # "–", as its head's accuracy).
    Column("adversary_fit_head", "Adversary, train clips", None),
    Column("adversary_fit_probe", "Linear probe, same clips", None),
)


def cell_stat(summary: SummaryRecord, key: str) -> Stat | None:
    """The statistic of column ``key`` in ``summary`` (chance as a fixed value)."""
    if key == "chance_adv":
        value = summary.chance_adv
        return None if value is None else Stat(value, 0.0, 1, (value,))
    return summary.stat(key)


def rank_marks(values: Sequence[float | None], best: str) -> list[str]:
    """``"bold"`` for the best displayed value(s), ``"underline"`` for the second best,
    ``""`` otherwise. Values are compared as displayed (percent, 2 decimals), so ties in
    the table are marked alike. Needs at least two values to mark anything."""
    shown = [None if v is None else round(100 * v, 2) for v in values]
    present = [v for v in shown if v is not None]
    if len(present) < 2:
        return [""] * len(values)
    distinct = sorted(set(present), reverse=(best == "max"))
    first = distinct[0]
    # A second best is only worth marking when it is not simply the last of two rows.
    second = distinct[1] if len(distinct) > 1 and len(present) > 2 else None
    marks = []
    for v in shown:
        if v is not None and v == first:
            marks.append("bold")
        elif v is not None and v == second:
            marks.append("underline")
        else:
            marks.append("")
    return marks


def _mark(text: str, mark: str) -> str:
    if mark == "bold":
        return f"**{text}**"
    if mark == "underline":
        return f"<u>{text}</u>"
    return text


def selected_on_test(summary: SummaryRecord) -> bool:
    """Whether any seed of the run selected its epoch on the test split."""
    return summary.selection.split in ("test", "mixed")


def report_table(
    summaries: Sequence[SummaryRecord],
    names: Sequence[str] | None = None,
    columns: Sequence[Column] = COLUMNS,
    lead: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """Markdown table of ``summaries`` (``summary.json`` records), rows named by
    ``names`` (default: each summary's ``run``). ``lead`` adds descriptive columns after
    the run name, each ``(title, one cell per summary)`` (e.g. Table 4's component ticks)."""
    if not summaries:
        raise TrainerError("report: no run given")
    names = list(names) if names is not None else [recorded(s.info.run, "?") for s in summaries]
    for title, cells in lead:
        if len(cells) != len(summaries):
            raise ValueError(
                f"lead column {title!r} has {len(cells)} cells for {len(summaries)} rows"
            )
    groups: dict[tuple[str, str], list[int]] = {}
    for i, summary in enumerate(summaries):
        key = (str(recorded(summary.info.dataset, "?")), str(recorded(summary.info.task, "?")))
        groups.setdefault(key, []).append(i)

    titles = ["Run", *(title for title, _ in lead), *(c.title for c in columns)]
    width = len(titles) - 1
    lines = ["| " + " | ".join(titles) + " |", "|---|" + "---|" * width]
    for (dataset, task), members in groups.items():
        adv = recorded(summaries[members[0]].info.adversarial_label, "y-")
        heading = f"**{markdown_cell(dataset)}: {markdown_cell(task)} (y- = {markdown_cell(adv)})**"
        lines.append(f"| {heading} |" + " |" * width)
        marks: dict[str, list[str]] = {}
        for column in columns:
            stats = [cell_stat(summaries[i], column.key) for i in members]
            values = [None if s is None else s.mean for s in stats]
            marks[column.key] = (
                rank_marks(values, column.best) if column.best else [""] * len(members)
            )
        for row, i in enumerate(members):
            cells = []
            for column in columns:
                stat = cell_stat(summaries[i], column.key)
                if column.key == "chance_adv" and stat:
                    text = f"{100 * stat.mean:.2f}"
                else:
                    text = format_mean_std(stat, percent=column.percent)
                cells.append(_mark(text, marks[column.key][row]))
            leading = [markdown_cell(cells_of[i]) for _, cells_of in lead]
            name = markdown_cell(names[i]) + (" †" if selected_on_test(summaries[i]) else "")
            lines.append(f"| {name} | " + " | ".join([*leading, *cells]) + " |")
    metrics = {s.selection.metric for s in summaries} - {None}
    lines += [
        "",
        f"Values in %, mean ± {STD_NOTE}. Within each group the best value of a column is "
        "**bold** and the second best underlined (highest is best, except the y- probe, "
        "where lowest is best: less of the discarded label left). Probes: balanced accuracy "
        "of a logistic-regression probe fitted on the training split's frozen embeddings "
        "(view 0) and scored on the test split. The adversarial head's accuracy is that of "
        "the head the encoder was trained to defeat, not a measure of disentanglement. "
        "Epochs selected by validation "
        + (" / ".join(sorted(metrics)) if metrics else "accuracy")
        + ".",
    ]
    if any(selected_on_test(s) for s in summaries):
        lines += [
            "",
            "† epoch selected on the test split (`--protocol paper`, as the paper did): "
            "optimistic; not comparable with rows selected on validation.",
        ]
    return "\n".join(lines) + "\n"


# ----- paired differences from a baseline run -------------------------------------------------
PAIRED = (
    ("accuracy", "Δ Acc", "y_task", None),
    ("probe_task", "Δ Probe y+", "y_task", "finetuned_task"),
    ("probe_adv", "Δ Probe y- (leakage)", "y_adv", "finetuned_adv"),
)


def paired_differences(
    run: Sequence[EvaluationRecord], baseline: Sequence[EvaluationRecord]
) -> dict[str, Any]:
    """Differences run - baseline over the seeds both evaluated on the same test clips.

    ``run`` / ``baseline``: per-seed evaluation records (``evaluation.json`` with their
    ``clips``: those without are skipped). Returns ``{"seeds": [...], "skipped": {seed:
    why}, key: {"difference", "ci_low", "ci_high", "seeds"}}`` for task accuracy,
    y+ probe and y- probe (balanced accuracy), with a paired bootstrap over the shared test clips.
    """
    from trainer.metrics import accuracy, uar
    from trainer.probes import paired_difference

    by_seed = {r.seed: r for r in baseline}
    shared, skipped = [], {}
    for record in sorted(run, key=lambda r: r.seed):
        other = by_seed.get(record.seed)
        if other is None:
            skipped[record.seed] = "baseline has no such seed"
        elif record.clips is None or other.clips is None:
            skipped[record.seed] = "evaluated before per-clip predictions were recorded"
        elif record.clips.ids != other.clips.ids:
            skipped[record.seed] = "another test split"
        else:
            shared.append((record.seed, record.clips, other.clips))
    result: dict[str, Any] = {"seeds": [seed for seed, _, _ in shared], "skipped": skipped}
    for key, _, truth, probe in PAIRED:
        groups = []
        for _, mine, theirs in shared:
            y = list(getattr(mine, truth))
            if probe is None:
                a, b = list(mine.task_pred), list(theirs.task_pred)
            else:
                a, b = list(mine.probe_pred[probe]), list(theirs.probe_pred[probe])
            groups.append((y, a, b))
        metric = accuracy if probe is None else uar
        result[key] = paired_difference(groups, metric=metric, seed=stable_seed("paired", key))
    return result


def baseline_table(rows: Sequence[tuple[str, dict[str, Any]]], baseline: str) -> str:
    """Markdown of :func:`paired_differences` results, one row per run: ``"+1.25
    [-0.40, 2.90]"`` in percentage points."""

    def cell(diff: dict[str, Any]) -> str:
        if diff["seeds"] == 0 or diff["difference"] != diff["difference"]:
            return "–"
        return (
            f"{100 * diff['difference']:+.2f} "
            f"[{100 * diff['ci_low']:+.2f}, {100 * diff['ci_high']:+.2f}]"
        )

    lines = [
        f"## Paired differences from {baseline}",
        "",
        "| Run | Seeds | " + " | ".join(title for _, title, _, _ in PAIRED) + " |",
        "|---|---|" + "---|" * len(PAIRED),
    ]
    for name, result in rows:
        seeds = ", ".join(str(s) for s in result["seeds"]) or "none shared"
        lines.append(
            f"| {markdown_cell(name)} | {seeds} | "
            + " | ".join(cell(result[k]) for k, *_ in PAIRED)
            + " |"
        )
    lines += [
        "",
        "Run minus baseline, in percentage points, averaged over the seeds the two runs "
        "evaluated on the same test clips; [low, high]: paired bootstrap 95 % interval, the "
        "same test clips resampled for both runs (it covers test-set sampling, not training "
        "variation). A negative Δ on the y- probe means less leakage than the baseline.",
    ]
    return "\n".join(lines) + "\n"


def report_runs(
    runs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
) -> str:
    """The table for run folders ``runs`` (each evaluated first if it has no summary yet),
    and with ``baseline`` the paired differences of every other run from it; written to
    ``out`` when given. Returns the Markdown."""
    from trainer.evaluate import ensure_summary
    from trainer.rundir import RunDir

    if baseline is not None and str(baseline) not in {str(r) for r in runs}:
        runs = [*runs, baseline]
    summaries = [ensure_summary(run) for run in runs]
    names = [Path(run).name for run in runs]
    text = report_table(summaries, names)
    if baseline is not None:

        def records(run: str | os.PathLike[str]) -> list[EvaluationRecord]:
            return [d.read_evaluation() for d in RunDir(run).seeds_with_model()]

        base = records(baseline)
        rows = [
            (Path(run).name, paired_differences(records(run), base))
            for run in runs
            if str(run) != str(baseline)
        ]
        unpaired = [name for name, result in rows if not result["seeds"]]
        if unpaired:
            raise TrainerError(
                f"report --baseline {baseline}: run {unpaired[0]} shares no seed evaluated on "
                "the same test clips (train both with the same --seeds, split settings and "
                "manifest)"
            )
        text += "\n" + baseline_table(rows, Path(baseline).name)
    if out is not None:
        write_text(out, text)
    return text
