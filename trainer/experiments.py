"""The paper's experiments, each one call that trains the runs it needs and ends with its
table or figure.

- :func:`run_ablation` (Table 4): backbone only; + GRL; + consistency loss with one view;
  + N views.
- :func:`run_views` (Figure 3): the full method for each N in a list (1..7 in the paper).
- :func:`run_cross_check` (Table 3): each perturbation kind on each task.
- :func:`run_baselines`: for each backbone of a list, the backbone fine-tuned alone and with
  the GRL only (the paper's "HuBERT" / "HuBERT-GRL" rows).

Every experiment starts from one base :class:`~trainer.config.TrainConfig` (the same
options as ``ncore-train``) and changes only what its rows differ in. Runs go to
``<out>/<experiment>/<row>/`` and are trained with ``resume=True``, so re-running an
interrupted experiment continues it (finished seeds are skipped; a changed setting is
refused by the trainer). Each run is evaluated (``summary.json``, probes, figures) and the
experiment writes ``<out>/<experiment>/<experiment>.md`` (and ``.json``) plus its PNG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json, write_text
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.records import SummaryRecord
from trainer.rundir import RunDir

log = logging.getLogger(__name__)

TICK = "✓"


@dataclass(frozen=True)
class Row:
    """One run of an experiment: its folder name, what it changes, and its lead cells."""

    name: str
    changes: dict[str, Any]
    cells: dict[str, str] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """Where an experiment wrote its runs, table and figure, and the run summaries."""

    folder: Path
    table: Path
    runs: list[Path]
    summaries: list[SummaryRecord]
    figure: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "table": str(self.table),
            "figure": None if self.figure is None else str(self.figure),
            "runs": [str(p) for p in self.runs],
        }


def train_and_evaluate(config: TrainConfig) -> tuple[RunDir, SummaryRecord] | None:
    """Train ``config`` (every seed), then evaluate the run: its folder and summary. Under
    ``torchrun`` only rank 0 evaluates (the others return None once their training is
    done)."""
    from trainer.evaluate import evaluate_run
    from trainer.loop import train

    plan, _ = train(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return plan.run, evaluate_run(plan.out, device=config.device, plan=plan)


def run_rows(
    base: TrainConfig,
    rows: Sequence[Row],
    folder: Path,
    lead_titles: Sequence[str],
) -> ExperimentResult:
    """Train and evaluate every row, then write the experiment's Markdown table."""
    from trainer.report import report_table

    folder.mkdir(parents=True, exist_ok=True)
    runs, summaries = [], []
    for row in rows:
        run = folder / row.name
        log.info("experiment run %s", run)
        config = base.replace(**row.changes, out=str(run), resume=True)
        summaries.append(train_and_evaluate(config)[1])
        runs.append(run)
    lead = [(title, [row.cells.get(title, "") for row in rows]) for title in lead_titles]
    text = report_table(summaries, [row.name for row in rows], lead=lead)
    table = folder / f"{folder.name}.md"
    write_text(table, f"# {folder.name}\n\n{text}")
    write_json(
        folder / f"{folder.name}.json",
        {"rows": [{"name": r.name, "changes": r.changes} for r in rows], "base": base.to_dict()},
    )
    return ExperimentResult(folder, table, runs, summaries)


def _checked_views(views: Sequence[int]) -> list[int]:
    views = list(views)
    if not views or any(v < 1 for v in views):
        raise TrainerError(f"views must be a non-empty list of integers >= 1, got {views}")
    return views


def ablation_rows(base: TrainConfig, views: int) -> list[Row]:
    """Table 4's rows: each adds one component to the one before."""
    reg = base.lambda_reg if base.lambda_reg > 0 else TrainConfig.lambda_reg
    titles = ("Backbone", "GRL", "RL", "NV")

    def cells(*on: str) -> dict[str, str]:
        return {t: TICK if t in on else "" for t in titles}

    return [
        Row("backbone", {"adversary": False, "views": 0, "lambda_reg": 0.0}, cells("Backbone")),
        Row("grl", {"adversary": True, "views": 0, "lambda_reg": 0.0}, cells("Backbone", "GRL")),
        Row(
            "grl-rl-n1",
            {"adversary": True, "views": 1, "lambda_reg": reg},
            cells("Backbone", "GRL", "RL"),
        ),
        Row(
            f"grl-rl-n{views}",
            {"adversary": True, "views": views, "lambda_reg": reg},
            cells("Backbone", "GRL", "RL", "NV"),
        ),
    ]


def run_ablation(
    base: TrainConfig, out: str | os.PathLike[str], views: int = 5
) -> ExperimentResult:
    """Table 4: backbone only; + GRL; + consistency loss with one view; + ``views`` views."""
    _checked_views([views])
    if views < 2:
        raise TrainerError("ablation: --views must be >= 2 (the last row adds views to N = 1)")
    return run_rows(
        base, ablation_rows(base, views), Path(out) / "ablation", ("Backbone", "GRL", "RL", "NV")
    )


def run_views(
    base: TrainConfig, out: str | os.PathLike[str], views: Sequence[int] = (1, 2, 3, 4, 5, 6, 7)
) -> ExperimentResult:
    """Figure 3: the full method for each N in ``views``; table plus accuracy-vs-N PNG."""
    from trainer.plots import plot_accuracy_vs_views

    views = _checked_views(views)
    rows = [Row(f"n{n}", {"views": n}, {"N": str(n)}) for n in views]
    result = run_rows(base, rows, Path(out) / "views", ("N",))
    accuracy = [s.metrics["accuracy"] for s in result.summaries]
    result.figure = plot_accuracy_vs_views(
        views,
        [a.mean for a in accuracy],
        [a.std for a in accuracy],
        result.folder / "accuracy_vs_views.png",
        f"{base.task} accuracy against N ({len(base.seeds)} seed(s))",
    )
    return result


def run_cross_check(
    base: TrainConfig,
    out: str | os.PathLike[str],
    tasks: Sequence[str] = ("speaker", "emotion"),
    perturbations: Sequence[str] = ("emotion", "speaker"),
) -> ExperimentResult:
    """Table 3: each perturbation kind on each task (the matched pairing should help, the
    mismatched one hurt: perturbing what the task needs removes its cue)."""
    symbol = {"emotion": "p_e", "speaker": "p_s"}
    rows = [
        Row(
            f"{task}-{kind}",
            {"task": task, "perturbation": kind},
            {"Task": task, "Perturbation": symbol[kind]},
        )
        for task in tasks
        for kind in perturbations
    ]
    return run_rows(base, rows, Path(out) / "cross-check", ("Task", "Perturbation"))


def run_baselines(
    base: TrainConfig, out: str | os.PathLike[str], backbones: Sequence[str]
) -> ExperimentResult:
    """For each backbone: fine-tuned alone (no adversary, no views) and with the GRL only."""
    if not backbones:
        raise TrainerError("baselines: give at least one backbone")
    rows = []
    for backbone in backbones:
        slug = backbone.rstrip("/").replace("/", "_").replace(".", "_") or "backbone"
        rows.append(
            Row(
                f"{slug}",
                {"backbone": backbone, "adversary": False, "views": 0, "lambda_reg": 0.0},
                {"Backbone": backbone, "GRL": ""},
            )
        )
        rows.append(
            Row(
                f"{slug}-grl",
                {"backbone": backbone, "adversary": True, "views": 0, "lambda_reg": 0.0},
                {"Backbone": backbone, "GRL": TICK},
            )
        )
    return run_rows(base, rows, Path(out) / "baselines", ("Backbone", "GRL"))
