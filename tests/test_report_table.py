"""The cross-run Markdown table: rows, columns, numbers and which cell is marked best."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trainer.errors import TrainerError
from trainer.report import COLUMNS, rank_marks, report_table


def stat(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


def fake_summary(run, acc, leak, dataset="synthetic", task="emotion"):
    metrics = {
        "accuracy": stat(acc),
        "macro_f1": stat([a - 0.02 for a in acc]),
        "uar": stat([a - 0.01 for a in acc]),
        "probe_task": stat([0.8, 0.82, 0.81]),
        "probe_adv": stat(leak),
        "backbone_probe_adv": stat([0.9, 0.9, 0.9]),
        "adv_head_accuracy": stat([0.2, 0.25, 0.3]),
    }
    return {
        "run": run,
        "dataset": dataset,
        "task": task,
        "adversarial_label": "speaker",
        "metrics": metrics,
        "chance": {"task": 0.25, "adv": 1 / 6},
    }


def rows_of(table):
    return [
        line for line in table.splitlines() if line.startswith("| ") and "**synthetic" not in line
    ]


def test_table_has_one_row_per_run_and_marks_the_best():
    summaries = [
        fake_summary("backbone", [0.60, 0.62, 0.61], [0.70, 0.72, 0.71]),
        fake_summary("grl", [0.63, 0.64, 0.65], [0.50, 0.52, 0.51]),
        fake_summary("ncore", [0.66, 0.67, 0.65], [0.40, 0.45, 0.42]),
    ]
    table = report_table(summaries)
    header, *body = rows_of(table)
    titles = [c.strip() for c in header.strip("|").split("|")]
    assert titles == ["Run"] + [c.title for c in COLUMNS]
    assert [r.split("|")[1].strip() for r in body] == ["backbone", "grl", "ncore"]
    cells = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in body
    }
    acc, leak = titles.index("Acc") - 1, titles.index("Probe y- (leakage)") - 1
    # Highest accuracy and LOWEST leakage are bold; both belong to ncore here.
    assert cells["ncore"][acc].startswith("**") and cells["ncore"][leak].startswith("**")
    assert cells["grl"][acc].startswith("<u>") and not cells["backbone"][acc].startswith("**")
    # Numbers are percentages of the means, in range.
    for row in cells.values():
        for cell in row:
            for number in re.findall(r"\d+\.\d+", cell):
                assert 0.0 <= float(number) <= 100.0
    expected = (
        f"{100 * np.mean([0.66, 0.67, 0.65]):.2f} ± {100 * np.std([0.66, 0.67, 0.65], ddof=1):.2f}"
    )
    assert expected in cells["ncore"][acc]
    # Reference columns are never marked.
    for title in ("Backbone probe y-", "Chance y-", "Adv. head acc."):
        column = titles.index(title) - 1
        assert not any(row[column].startswith(("**", "<u>")) for row in cells.values())


def test_runs_of_different_tasks_are_ranked_separately():
    summaries = [
        fake_summary("emo-a", [0.5, 0.5, 0.5], [0.3, 0.3, 0.3]),
        fake_summary("spk-a", [0.9, 0.9, 0.9], [0.6, 0.6, 0.6], task="speaker"),
        fake_summary("emo-b", [0.6, 0.6, 0.6], [0.4, 0.4, 0.4]),
    ]
    table = report_table(summaries)
    assert table.count("**synthetic: emotion") == 1 and table.count("**synthetic: speaker") == 1
    spk_row = next(line for line in table.splitlines() if line.startswith("| spk-a"))
    # Alone in its group: nothing to compare with, nothing marked.
    assert "**" not in spk_row
    emo_b = next(line for line in table.splitlines() if line.startswith("| emo-b"))
    assert "**60.00" in emo_b


def test_rank_marks_ties_and_missing_values():
    assert rank_marks([0.5, 0.5, 0.4], "max") == ["bold", "bold", "underline"]
    assert rank_marks([0.3, None, 0.2], "min") == ["", "", "bold"]
    assert rank_marks([0.3], "max") == [""]


def test_empty_report_is_a_user_error():
    with pytest.raises(TrainerError):
        report_table([])
