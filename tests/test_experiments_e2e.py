"""End to end: each experiment command trains its runs on the synthetic corpus with the tiny
backbone (CI-sized: one seed, one short epoch) and ends with its table or figure."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from pipeline.testing.eval_corpus import TRAIN_OPTIONS, prepared_corpus
from pipeline.testing.figures import assert_real_png
from trainer.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    manifest = prepared_corpus(tmp_path_factory.getbasetemp())
    return manifest, tmp_path_factory.mktemp("experiments")


def run_experiment(manifest, out, *args):
    result = CliRunner().invoke(
        main, ["--manifest", str(manifest), *TRAIN_OPTIONS, *args, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return result


def table_rows(path):
    """{run name: [cells]} of the data rows of a Markdown table written by an experiment."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith(("| Run", "| **")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def numbers_in_range(cells):
    values = [float(x) for cell in cells for x in re.findall(r"\d+\.\d+", cell)]
    assert values and all(0.0 <= v <= 100.0 for v in values)
    return values


def run_config(folder):
    return json.loads((folder / "config.json").read_text())


def test_ablation_table4(setup):
    manifest, out = setup
    run_experiment(manifest, out, "ablation", "--views", "2")
    folder = out / "ablation"
    rows = table_rows(folder / "ablation.md")
    assert list(rows) == ["backbone", "grl", "grl-rl-n1", "grl-rl-n2"]
    # Each row adds one component: the tick columns and the runs' actual settings agree.
    ticks = {name: [c == "✓" for c in cells[:4]] for name, cells in rows.items()}
    assert ticks == {
        "backbone": [True, False, False, False],
        "grl": [True, True, False, False],
        "grl-rl-n1": [True, True, True, False],
        "grl-rl-n2": [True, True, True, True],
    }
    settings = {name: run_config(folder / name) for name in rows}
    assert [settings[n]["adversary"] for n in rows] == [False, True, True, True]
    assert [settings[n]["resolved_views"] for n in rows] == [0, 0, 1, 2]
    assert settings["backbone"]["lambda_reg"] == 0.0 and settings["grl-rl-n1"]["lambda_reg"] > 0
    for cells in rows.values():
        numbers_in_range(cells[4:])
    # The backbone-only run has no adversarial head: its cell is empty, not a number.
    assert rows["backbone"][-1] == "–"


def test_views_figure3(setup):
    manifest, out = setup
    result = run_experiment(manifest, out, "views", "--n", "1,2")
    folder = out / "views"
    rows = table_rows(folder / "views.md")
    assert list(rows) == ["n1", "n2"]
    assert [run_config(folder / n)["resolved_views"] for n in rows] == [1, 2]
    for cells in rows.values():
        numbers_in_range(cells[1:])
    assert_real_png(folder / "accuracy_vs_views.png", min_bytes=4000)
    assert "accuracy_vs_views.png" in result.output


def test_cross_check_table3(setup):
    manifest, out = setup
    run_experiment(manifest, out, "cross-check")
    folder = out / "cross-check"
    text = (folder / "cross-check.md").read_text()
    rows = table_rows(folder / "cross-check.md")
    assert sorted(rows) == [
        "emotion-emotion",
        "emotion-speaker",
        "speaker-emotion",
        "speaker-speaker",
    ]
    for name, cells in rows.items():
        task, kind = name.split("-")
        config = run_config(folder / name)
        assert (config["task"], config["perturbation"]) == (task, kind)
        assert cells[:2] == [task, {"emotion": "p_e", "speaker": "p_s"}[kind]]
        numbers_in_range(cells[2:])
    # Tasks are ranked separately: one group heading per task.
    assert text.count("**syn: speaker") == 1 and text.count("**syn: emotion") == 1


def test_baselines(setup):
    manifest, out = setup
    run_experiment(manifest, out, "baselines", "--backbones", "tiny")
    folder = out / "baselines"
    rows = table_rows(folder / "baselines.md")
    assert list(rows) == ["tiny", "tiny-grl"]
    assert [run_config(folder / n)["adversary"] for n in rows] == [False, True]
    assert all(run_config(folder / n)["resolved_views"] == 0 for n in rows)
    for cells in rows.values():
        numbers_in_range(cells[2:])


def test_experiment_without_training_options_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["views", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--manifest" in result.output
