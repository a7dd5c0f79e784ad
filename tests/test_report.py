"""The cross-run Markdown table (trainer/report.py): rows, columns, numbers and which cell is
marked best; labels and run names holding ``|`` or a line break keep the summary and report
tables whole (a regression of issue 13: a label ``a|b`` split its cell in two and a newline
ended the row in the middle)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trainer.errors import TrainerError
from trainer.records import (
    ClipPredictions,
    EvaluationRecord,
    RunInfo,
    Selection,
    SelectionSummary,
    SplitsSummary,
    Stat,
    SummaryRecord,
)
from trainer.report import COLUMNS, rank_marks, report_table
from trainer.summary import markdown_cell, seed_record, summarize, summary_markdown


def stat(values):
    return Stat(float(np.mean(values)), float(np.std(values, ddof=1)), len(values), tuple(values))


def fake_summary(run, acc, leak, dataset="synthetic", task="emotion", selection=None):
    metrics = {
        "accuracy": stat(acc),
        "macro_f1": stat([a - 0.02 for a in acc]),
        "uar": stat([a - 0.01 for a in acc]),
        "probe_task": stat([0.8, 0.82, 0.81]),
        "probe_adv": stat(leak),
        "backbone_probe_adv": stat([0.9, 0.9, 0.9]),
        "adv_head_accuracy": stat([0.2, 0.25, 0.3]),
    }
    split, metric = selection or (None, None)
    return SummaryRecord(
        info=RunInfo(run=run, dataset=dataset, task=task, adversarial_label="speaker"),
        seeds=(1, 2, 3),
        selection=SelectionSummary(split, metric, {}),
        splits=SplitsSummary(None, None, None, {}),
        task_names=(),
        adv_names=(),
        metrics=metrics,
        chance_task=0.25,
        chance_adv=1 / 6,
        per_class={},
        confusion=(),
        confusion_per_seed={},
    )


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


# ----- selection on test and paired differences -----------------------------------------------
def test_rows_selected_on_test_are_marked_and_explained():
    honest = fake_summary(
        "honest", [0.60, 0.62, 0.61], [0.70, 0.72, 0.71], selection=("val", "uar")
    )
    paper = fake_summary("paper", [0.66, 0.67, 0.65], [0.40, 0.45, 0.42], selection=("test", "uar"))
    table = report_table([honest, paper])
    names = [r.split("|")[1].strip() for r in rows_of(table)[1:]]
    assert names == ["honest", "paper †"]
    assert "† epoch selected on the test split" in table
    assert "Epochs selected by validation uar" in table
    assert "†" not in report_table([honest])


def evaluation_record(seed, ids, y_task, y_adv, task_pred, probe_adv, probe_task=None):
    clips = ClipPredictions(
        ids=tuple(ids),
        y_task=tuple(int(v) for v in y_task),
        y_adv=tuple(int(v) for v in y_adv),
        task_pred=tuple(int(v) for v in task_pred),
        probe_pred={
            "finetuned_task": tuple(
                int(v) for v in (probe_task if probe_task is not None else y_task)
            ),
            "finetuned_adv": tuple(int(v) for v in probe_adv),
        },
    )
    return EvaluationRecord(
        seed=seed,
        test_clips=len(ids),
        task_names=(),
        adv_names=("s", "t"),
        metrics={},
        per_class={},
        confusion_matrix=(),
        probes={},
        selection=Selection("val", "accuracy"),
        clips=clips,
    )


def test_paired_differences_over_shared_seeds_and_test_clips():
    from trainer.report import paired_differences

    rng = np.random.default_rng(4)
    n = 200
    ids = [f"c{i}" for i in range(n)]
    y_task, y_adv = rng.integers(0, 4, n), rng.integers(0, 6, n)
    # The baseline's y- probe is right on 60 % of the clips; the run's on 30 % of them
    # (balanced accuracy follows, as classes are near balanced): leakage down by ~0.3.
    right_base, right_run = rng.random(n) < 0.6, rng.random(n) < 0.3
    base_probe = np.where(right_base, y_adv, (y_adv + 1) % 6)
    run_probe = np.where(right_run, y_adv, (y_adv + 1) % 6)
    base = [evaluation_record(s, ids, y_task, y_adv, y_task, base_probe) for s in (1, 2)]
    run = [evaluation_record(s, ids, y_task, y_adv, y_task, run_probe) for s in (1, 2)]
    run.append(evaluation_record(3, ids, y_task, y_adv, y_task, run_probe))  # not in baseline
    other_split = evaluation_record(2, ids[::-1], y_task, y_adv, y_task, run_probe)
    result = paired_differences([*run[:1], other_split, run[2]], base)
    assert result["seeds"] == [1]
    assert result["skipped"] == {2: "another test split", 3: "baseline has no such seed"}
    result = paired_differences(run, base)
    assert result["seeds"] == [1, 2]
    from trainer.metrics import uar

    expected = uar(y_adv, run_probe) - uar(y_adv, base_probe)
    leak = result["probe_adv"]
    assert leak["difference"] == pytest.approx(expected)
    assert expected < -0.2  # the planted effect, in the right direction
    assert leak["ci_low"] < expected < leak["ci_high"] < 0  # an interval that excludes 0
    assert result["accuracy"]["difference"] == 0.0  # same task predictions: no difference


def test_baseline_report_refuses_runs_without_a_shared_split(tmp_path):
    from trainer.report import report_runs
    from trainer.rundir import RunDir

    for name, ids in (("a", ["x", "y"]), ("b", ["y", "z"])):
        run = RunDir(tmp_path / name)
        seed_dir = run.seed(1)
        (seed_dir.best).mkdir(parents=True)
        seed_dir.model_record_path.write_text("{}")
        seed_dir.write_evaluation(evaluation_record(1, ids, [0, 1], [0, 1], [0, 1], [0, 1]))
        run.write_summary(fake_summary(name, [0.5, 0.6, 0.7], [0.3, 0.3, 0.4]), "")
    with pytest.raises(TrainerError, match="shares no seed evaluated on the same test clips"):
        report_runs([tmp_path / "a"], baseline=tmp_path / "b")


# ----- labels with pipes and line breaks ----------------------------------------------------------
LABELS = ["a|b", "line\nbreak", "back\\slash|", "<b>plain</b>"]
UNESCAPED_PIPE = re.compile(r"(?<!\\)(?:\\\\)*\|")


def cells(row: str) -> int:
    """Cells of a Markdown table row: pipes not escaped by a backslash separate them."""
    return len(UNESCAPED_PIPE.findall(row)) - 1


def tables(markdown: str) -> list[list[str]]:
    """Runs of consecutive lines that start with '|'."""
    found, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return [*found, current] if current else found


def test_labels_with_pipes_and_newlines_keep_every_table_row_whole():
    y_true = [0, 1, 2, 3, 0, 1, 2, 3]
    y_pred = [0, 1, 2, 3, 1, 1, 2, 0]
    records = [
        seed_record(seed, LABELS, ["s1", "s|2"], y_true, y_true, y_pred, None, {})
        for seed in (1, 2)
    ]
    text = summary_markdown(summarize(records, {"task": "emotion"}))
    found = tables(text)
    per_class = next(t for t in found if t[0].startswith("| Class"))
    confusion = next(t for t in found if t[0].startswith("| true"))
    assert len(per_class) == 2 + len(LABELS) and len(confusion) == 2 + len(LABELS)
    for table in found:
        assert len({cells(row) for row in table}) == 1, table
    assert cells(confusion[0]) == 1 + len(LABELS)
    for line in text.splitlines():  # no label text outside its row
        assert "break" not in line or line.startswith("|")


def test_markdown_cell_escapes_and_keeps_the_text():
    for label in LABELS:
        cell = markdown_cell(label)
        assert "\n" not in cell and cells(f"| {cell} |") == 1
        shown = cell.replace("<br>", "\n").replace("&lt;", "<").replace("&gt;", ">")
        shown = re.sub(r"\\(.)", r"\1", shown.replace("&amp;", "&"))
        assert shown == label


def test_run_names_with_pipes_keep_the_report_table_whole():
    summaries = [
        fake_summary("run|one", [0.5, 0.6, 0.7], [0.3, 0.3, 0.3]),
        fake_summary("run\ntwo", [0.4, 0.5, 0.6], [0.2, 0.2, 0.3]),
    ]
    table = report_table(summaries)
    rows = tables(table)[0]
    assert len(rows) == 2 + 1 + 2  # header, rule, group heading, two runs
    assert len({cells(r) for r in rows}) == 1
