"""One Markdown table across runs, in the layout of the paper's Tables 1 and 2.

Rows are runs, columns are metrics (percent, mean ± sample std over seeds). Runs are grouped
by (dataset, task), one group heading per pair like the paper's model-family rows, and the
best value of each column within a group is **bold** (the second best underlined, as in
the paper). "Best" is the highest value, except for the y- probe (leakage), where the lowest
is best. Reference columns (backbone probes, chance, the adversarial head's accuracy) are
never marked: they describe the starting point or the training game, not the result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text
from trainer.errors import TrainerError
from trainer.summary import STD_NOTE, format_mean_std, markdown_cell


@dataclass(frozen=True)
class Column:
    """One metric column: summary key, title, and how to rank it (None: never marked)."""

    key: str
    title: str
    best: str | None  # "max", "min" or None


COLUMNS = (
    Column("accuracy", "Acc", "max"),
    Column("macro_f1", "F1", "max"),
    Column("uar", "UAR", "max"),
    Column("probe_task", "Probe y+", "max"),
    Column("probe_adv", "Probe y- (leakage)", "min"),
    Column("backbone_probe_adv", "Backbone probe y-", None),
    Column("labels_only_probe_adv", "y- from y+ label", None),
    Column("chance_adv", "Chance y-", None),
    Column("adv_head_accuracy", "Adv. head acc.", None),
)


def cell_stat(summary: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The ``{"mean", "std"}`` of column ``key`` in ``summary`` (chance as a fixed value)."""
    if key == "chance_adv":
        value = summary.get("chance", {}).get("adv")
        return None if value is None else {"mean": value, "std": 0.0}
    return summary.get("metrics", {}).get(key)


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


def report_table(
    summaries: Sequence[dict[str, Any]],
    names: Sequence[str] | None = None,
    columns: Sequence[Column] = COLUMNS,
    lead: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """Markdown table of ``summaries`` (dicts as in ``summary.json``), rows named by
    ``names`` (default: each summary's ``run``). ``lead`` adds descriptive columns after
    the run name, each ``(title, one cell per summary)`` (e.g. Table 4's component ticks)."""
    if not summaries:
        raise TrainerError("report: no run given")
    names = list(names) if names is not None else [s.get("run", "?") for s in summaries]
    for title, cells in lead:
        if len(cells) != len(summaries):
            raise ValueError(
                f"lead column {title!r} has {len(cells)} cells for {len(summaries)} rows"
            )
    groups: dict[tuple[str, str], list[int]] = {}
    for i, summary in enumerate(summaries):
        key = (str(summary.get("dataset", "?")), str(summary.get("task", "?")))
        groups.setdefault(key, []).append(i)

    titles = ["Run", *(title for title, _ in lead), *(c.title for c in columns)]
    width = len(titles) - 1
    lines = ["| " + " | ".join(titles) + " |", "|---|" + "---|" * width]
    for (dataset, task), members in groups.items():
        adv = summaries[members[0]].get("adversarial_label", "y-")
        heading = f"**{markdown_cell(dataset)}: {markdown_cell(task)} (y- = {markdown_cell(adv)})**"
        lines.append(f"| {heading} |" + " |" * width)
        marks: dict[str, list[str]] = {}
        for column in columns:
            stats = [cell_stat(summaries[i], column.key) for i in members]
            values = [None if s is None else s.get("mean") for s in stats]
            marks[column.key] = (
                rank_marks(values, column.best) if column.best else [""] * len(members)
            )
        for row, i in enumerate(members):
            cells = []
            for column in columns:
                stat = cell_stat(summaries[i], column.key)
                if column.key == "chance_adv" and stat:
                    text = f"{100 * stat['mean']:.2f}"
                else:
                    text = format_mean_std(stat)
                cells.append(_mark(text, marks[column.key][row]))
            leading = [markdown_cell(cells_of[i]) for _, cells_of in lead]
            lines.append(f"| {markdown_cell(names[i])} | " + " | ".join([*leading, *cells]) + " |")
    lines += [
        "",
        f"Values in %, mean ± {STD_NOTE}. Within each group the best value of a column is "
        "**bold** and the second best underlined (highest is best, except the y- probe, "
        "where lowest is best: less of the discarded label left). Probes: balanced accuracy "
        "of a logistic-regression probe with stratified cross-validation on frozen test "
        "embeddings (view 0). The adversarial head's accuracy is that of the head the "
        "encoder was trained to defeat, not a measure of disentanglement.",
    ]
    return "\n".join(lines) + "\n"


def report_runs(
    runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] | None = None
) -> str:
    """The table for run folders ``runs`` (each evaluated first if it has no summary yet);
    written to ``out`` when given. Returns the Markdown."""
    from trainer.evaluate import ensure_summary

    summaries = [ensure_summary(run) for run in runs]
    names = [Path(run).name for run in runs]
    text = report_table(summaries, names)
    if out is not None:
        write_text(out, text)
    return text
