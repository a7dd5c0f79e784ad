"""Evaluation pure functions: probes, per-seed records, the summary over seeds, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.atomic import write_json
from trainer.probes import label_probes, linear_probe
from trainer.records import ClipPredictions, Invariance, InvarianceScores, Selection
from trainer.summary import (
    format_mean_std,
    mean_std,
    seed_record,
    summarize,
    summary_markdown,
)


# ----- probes ---------------------------------------------------------------------------------
def planted(n: int = 240, classes: int = 4, dim: int = 16, seed: int = 0):
    """Embeddings whose first ``classes`` dimensions encode the label (one-hot times 4, so
    class means are 4 * sqrt(2) noise standard deviations apart), the rest noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, dim))
    x[:, :classes] += 4.0 * np.eye(classes)[y]
    return x, y


def test_probe_finds_a_planted_linear_signal():
    x, y = planted()
    result = linear_probe(x, y, folds=5, seed=1)
    assert result.classes == 4 and result.chance == pytest.approx(0.25)
    assert result.balanced_accuracy > 0.9
    assert result.samples == 240 and result.dropped == 0 and result.folds == 5


def test_probe_on_shuffled_labels_is_near_chance():
    x, y = planted(n=400)
    shuffled = np.random.default_rng(7).permutation(y)
    result = linear_probe(x, shuffled, folds=5, seed=1)
    # 400 samples, 4 classes: the out-of-fold balanced accuracy of a label-free probe has a
    # standard deviation of about 2.5 points around 25 %.
    assert abs(result.balanced_accuracy - 0.25) < 0.1


def test_probe_balanced_accuracy_ignores_class_priors():
    # 90 % of the samples in class 0 and no signal: plain accuracy of "always 0" would be
    # 0.9, but balanced accuracy must stay near 1/2.
    rng = np.random.default_rng(3)
    y = np.array([0] * 360 + [1] * 40)
    x = rng.normal(size=(400, 8))
    result = linear_probe(x, y, seed=0)
    assert result.balanced_accuracy < 0.65


def test_probe_is_deterministic_and_drops_tiny_classes():
    x, y = planted(n=120, classes=3)
    y = y.copy()
    y[0] = 9  # a class with one member cannot be stratified
    first = linear_probe(x, y, folds=5, seed=4)
    again = linear_probe(x, y, folds=5, seed=4)
    assert first == again
    assert first.dropped == 1 and first.classes == 3 and first.samples == 119


def test_probe_with_one_class_is_nan_not_an_error():
    result = linear_probe(np.zeros((10, 3)), np.zeros(10, dtype=int))
    assert np.isnan(result.balanced_accuracy)


def test_label_probes_separates_kept_and_discarded_labels():
    x, y_task = planted(n=300, classes=3, seed=2)
    y_adv = np.random.default_rng(5).integers(0, 5, size=300)  # not encoded at all
    probes = label_probes(x, y_task, y_adv, seed=0)
    assert probes["task"].balanced_accuracy > 0.85
    assert probes["adv"].balanced_accuracy < probes["adv"].chance + 0.12


# ----- summary over seeds ------------------------------------------------------------------------
def test_mean_std_is_numpy_sample_std():
    values = [0.61, 0.64, 0.58]
    stat = mean_std(values)
    assert stat.mean == pytest.approx(np.mean(values))
    assert stat.std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([0.5]).std is None
    assert mean_std([]).mean is None


def fabricated_records(seeds=(42, 100, 510)):
    """Per-seed records from hand-made predictions, with their expected metrics."""
    names = ["calm", "angry", "sad"]
    adv_names = ["S1", "S2"]
    rng = np.random.default_rng(0)
    records, expected = [], []
    for k, seed in enumerate(seeds):
        y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
        pred = y.copy()
        pred[: k + 1] = 1  # seed k gets k+1 errors on class "calm"
        y_adv = rng.integers(0, 2, size=10)
        probe = {
            "balanced_accuracy": 0.5 + 0.1 * k,
            "fold_std": 0.0,
            "chance": 0.5,
            "classes": 2,
            "samples": 10,
            "folds": 2,
            "dropped": 0,
        }
        probes = {
            "finetuned": {"task": probe, "adv": probe},
            "backbone": {"task": probe, "adv": probe},
        }
        records.append(seed_record(seed, names, adv_names, y, y_adv, pred, y_adv, probes))
        accuracy = (10 - (k + 1)) / 10
        recalls = [(4 - (k + 1)) / 4, 1.0, 1.0]
        expected.append({"accuracy": accuracy, "uar": float(np.mean(recalls))})
    return records, expected


def test_seed_record_metrics_and_confusion_matrix():
    records, expected = fabricated_records()
    first = records[0]
    assert first.metrics["accuracy"] == pytest.approx(expected[0]["accuracy"])
    assert first.metrics["uar"] == pytest.approx(expected[0]["uar"])
    assert first.metrics["adv_head_accuracy"] == pytest.approx(1.0)
    # One "calm" clip predicted "angry": row calm, column angry.
    assert first.confusion_matrix == ((3, 1, 0), (0, 3, 0), (0, 0, 3))
    assert first.per_class["calm"].recall == pytest.approx(0.75)
    assert first.per_class["angry"].precision == pytest.approx(0.75)


def test_summary_mean_and_sample_std_over_seeds(tmp_path):
    records, expected = fabricated_records()
    summary = summarize(records, {"run": "r", "task": "emotion", "adversarial_label": "speaker"})
    accuracies = [e["accuracy"] for e in expected]
    assert summary.metrics["accuracy"].mean == pytest.approx(np.mean(accuracies))
    assert summary.metrics["accuracy"].std == pytest.approx(np.std(accuracies, ddof=1))
    assert summary.metrics["uar"].mean == pytest.approx(np.mean([e["uar"] for e in expected]))
    assert summary.metrics["probe_adv"].mean == pytest.approx(0.6)
    assert "ddof=1" in summary.to_dict()["std"]
    # Summed confusion matrix counts every test decision of every seed.
    total = np.asarray(summary.confusion)
    assert total.sum() == 30 and total[0, 1] == 1 + 2 + 3
    assert summary.per_class["calm"].support == 12
    write_json(tmp_path / "summary.json", summary.to_dict())
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [42, 100, 510]

    text = summary_markdown(summary)
    mean, std = 100 * np.mean(accuracies), 100 * np.std(accuracies, ddof=1)
    assert f"{mean:.2f} ± {std:.2f}" in text
    assert "| calm | 6 | 6 | 0 |" in text  # summed confusion row
    assert "not a measure of disentanglement" in text


def test_single_seed_std_is_not_invented():
    records, _ = fabricated_records(seeds=(42,))
    summary = summarize(records)
    assert summary.metrics["accuracy"].std is None
    assert format_mean_std(summary.metrics["accuracy"]).endswith("± n/a")


def test_label_only_probe_is_the_reference_for_correlated_labels():
    from trainer.probes import label_only_probe

    y_task = np.arange(300) % 3
    tied = label_only_probe(y_task, y_task.copy(), seed=0)  # y- is a renaming of y+
    assert tied.balanced_accuracy == pytest.approx(1.0)
    independent = np.random.default_rng(1).integers(0, 4, size=300)
    free = label_only_probe(y_task, independent, seed=0)
    assert free.chance == pytest.approx(0.25) and free.balanced_accuracy < 0.35


def test_summary_intervals_and_selection_are_stated():
    """ci95 of the mean over seeds from the per-clip predictions, the selection split and
    metric in summary.json and summary.md (paper protocol flagged as optimistic)."""
    rng = np.random.default_rng(11)
    names, adv_names = ["a", "b"], ["s0", "s1", "s2"]
    records = []
    for seed in (1, 2, 3):
        y = rng.integers(0, 2, 300)
        pred = np.where(rng.random(300) < 0.8, y, 1 - y)
        y_adv = rng.integers(0, 3, 300)
        record = seed_record(seed, names, adv_names, y, y_adv, pred, None, probes={})
        record = record.replace(
            selection=Selection("test", "uar"),
            split={"mode": "per-seed", "protocol": "paper", "stratify": "emotion"},
            clips=ClipPredictions(
                ids=tuple(f"c{i}" for i in range(300)),
                y_task=tuple(y.tolist()),
                y_adv=tuple(y_adv.tolist()),
                task_pred=tuple(pred.tolist()),
            ),
        )
        records.append(record)
    summary = summarize(records, {"run": "r"})
    acc = summary.metrics["accuracy"]
    low, high = acc.ci95
    assert low < acc.mean < high
    # 900 clips at p ~ 0.8: the interval of the mean is about 2 * 1.96 * sqrt(.16 / 900) wide.
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.16 / 900), rel=0.25)
    assert summary.metrics["probe_adv"].ci95 is None  # no probe predictions recorded
    assert summary.metrics["probe_adv"].to_dict()["ci95"] is None  # written as null
    assert summary.selection.split == "test" and summary.selection.metric == "uar"
    text = summary_markdown(summary)
    assert "Epoch selected on the test split by uar (paper protocol)" in text
    assert f"[{100 * low:.2f}, {100 * high:.2f}]" in text
    assert "Each seed drew its own split (protocol paper, stratified on emotion)" in text


def test_invariance_section_only_when_recorded_and_averaged_over_the_seeds_that_have_it():
    records, _ = fabricated_records()
    plain = summarize(records)
    assert "perturbation" not in plain.to_dict() and "transfer_adv" not in plain.metrics
    assert "## Invariance" not in summary_markdown(plain)
    # Seeds 42 and 100 were evaluated with views; 510 before the record existed.
    for k in range(2):
        entry = InvarianceScores(0.8, 1 / 3, 0.2 + 0.1 * k, 0.5, 0.25 * (k + 1))
        records[k] = records[k].replace(perturbation=Invariance("speaker", 2, entry, entry))
    summary = summarize(records)
    assert summary.to_dict()["perturbation"] == {"kind": "speaker", "views": 2}
    transfer = summary.metrics["transfer_adv"]
    assert transfer.n == 2 and transfer.values == (0.2, pytest.approx(0.3), None)
    assert transfer.mean == pytest.approx(0.25)
    assert summary.metrics["view_shift"].mean == pytest.approx(0.375)
    text = summary_markdown(summary)
    assert "## Invariance to the speaker perturbation (test split, views 1-2)" in text
    assert "| 25.00 ± 7.07 | 0.38 ± 0.18 |" in text  # y- on views (%), view shift (plain)
