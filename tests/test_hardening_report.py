"""Hardening (issue 13): labels holding ``|`` or a line break keep the Markdown tables intact.

Before the fix a label ``a|b`` split its cell in two and a newline ended the row in the
middle, so the summary and report tables lost their shape.
"""

from __future__ import annotations

import re

from test_report_table import fake_summary

from trainer.report import report_table
from trainer.summary import markdown_cell, seed_record, summarize, summary_markdown

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
