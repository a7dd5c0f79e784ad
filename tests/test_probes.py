"""The leakage protocol: probes fitted on train, scored on test, with bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import accuracy
from trainer.probes import (
    bootstrap_interval,
    held_out_label_only_probe,
    held_out_probe,
    linear_probe,
    paired_difference,
    perturbation_probe,
)


def coded(n: int, dim_of_label: int, seed: int, classes: int = 4, dims: int = 12):
    """Embeddings whose dimension block ``dim_of_label`` (4 dims) one-hot-codes the label
    at 4 noise standard deviations; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, dims))
    x[:, dim_of_label : dim_of_label + classes] += 4.0 * np.eye(classes)[y]
    return x, y


def test_probe_is_fitted_on_train_and_scored_on_test():
    # The label is coded in dims 0-3 in train and in dims 8-11 in test: a probe fitted on
    # train cannot read the test clips (near chance), while cross-validation inside the
    # test split (the old protocol) finds the test-only code (near 1).
    x_train, y_train = coded(400, 0, seed=1)
    x_test, y_test = coded(200, 8, seed=2)
    moved = held_out_probe(x_train, y_train, x_test, y_test, seed=0)
    inside_test = linear_probe(x_test, y_test, seed=0)
    assert inside_test.balanced_accuracy > 0.9
    assert moved.balanced_accuracy < 0.45
    assert moved.train_samples == 400 and moved.test_samples == 200
    # Same code in both splits: the held-out probe reads it.
    x_same, y_same = coded(200, 0, seed=3)
    same = held_out_probe(x_train, y_train, x_same, y_same, seed=0)
    assert same.balanced_accuracy > 0.9 and same.chance == pytest.approx(0.25)
    assert same.ci_low <= same.balanced_accuracy <= same.ci_high
    # The test labels only score the probe: the predictions do not depend on them.
    shuffled = np.random.default_rng(0).permutation(y_same)
    again = held_out_probe(x_train, y_train, x_same, shuffled, seed=0)
    assert np.array_equal(again.predictions, same.predictions)
    assert again.balanced_accuracy < 0.45


def test_bootstrap_interval_matches_the_binomial_width():
    # 400 clips, each right with probability 0.7 -> standard error sqrt(.21 / 400) = 0.0229,
    # so a 95 % interval about 2 * 1.96 * 0.0229 = 0.090 wide around the observed accuracy.
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 400)
    pred = np.where(rng.random(400) < 0.7, truth, 1 - truth)
    point, low, high = bootstrap_interval([(truth, pred)], accuracy, seed=1, resamples=2000)
    assert point == pytest.approx(np.mean(truth == pred))
    assert low < point < high
    assert (high - low) == pytest.approx(2 * 1.96 * math.sqrt(point * (1 - point) / 400), rel=0.15)
    # Three seeds of 400 clips each: the interval of their mean is about sqrt(3) narrower.
    groups = [(truth, pred)] * 3
    _, low3, high3 = bootstrap_interval(groups, accuracy, seed=1, resamples=2000)
    assert (high3 - low3) == pytest.approx((high - low) / math.sqrt(3), rel=0.2)


def test_paired_difference_on_shared_test_clips():
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 4, 300)
    a = np.where(rng.random(300) < 0.8, truth, (truth + 1) % 4)
    b = a.copy()
    worse = np.flatnonzero(a == truth)[:30]  # b is wrong on 30 more clips (10 % of 300)
    b[worse] = (truth[worse] + 2) % 4
    result = paired_difference([(truth, a, b)], metric=accuracy, seed=0)
    assert result["difference"] == pytest.approx(0.1)
    assert 0.0 < result["ci_low"] < 0.1 < result["ci_high"] < 0.2
    # Pairing: the interval is far narrower than that of either run alone (~ +-0.045).
    assert result["ci_high"] - result["ci_low"] < 0.08
    tie = paired_difference([(truth, a, a.copy())], metric=accuracy, seed=0)
    assert tie == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "seeds": 1}


def test_test_classes_never_seen_in_training_are_left_out():
    x_train, y_train = coded(200, 0, seed=1, classes=4)
    x_test, y_test = coded(100, 0, seed=2, classes=4)
    y_test = y_test + 2  # classes 2, 3 seen in training; 4, 5 never
    probe = held_out_probe(x_train, y_train, x_test, y_test, seed=0)
    assert probe.unseen == 50 and probe.test_samples == 50 and probe.classes == 2
    assert np.all(probe.predictions[y_test >= 4] == -1)
    none_seen = held_out_probe(x_train, y_train, x_test, y_test + 10, seed=0)
    assert math.isnan(none_seen.balanced_accuracy) and none_seen.test_samples == 0


def test_label_only_reference_on_held_out_splits():
    rng = np.random.default_rng(2)
    y_task_train, y_task_test = rng.integers(0, 3, 120), rng.integers(0, 3, 60)
    tied = held_out_label_only_probe(y_task_train, y_task_train, y_task_test, y_task_test)
    assert tied.balanced_accuracy == pytest.approx(1.0)
    free = held_out_label_only_probe(
        y_task_train, rng.integers(0, 3, 120), y_task_test, rng.integers(0, 3, 60)
    )
    assert free.balanced_accuracy < 0.6


def test_perturbation_probe_tells_a_removed_code_from_a_kept_one():
    # Speaker coded in dims 0-3, emotion in dims 8-11. The "perturbation" redraws dims 0-3
    # of every view (the speaker code is gone from the views) and leaves dims 8-11 alone.
    rng = np.random.default_rng(3)
    n, classes = 600, 4
    speaker = np.arange(n) % classes
    emotion = (np.arange(n) // classes) % classes
    x0 = rng.normal(size=(n, 12))
    x0[:, 0:4] += 4.0 * np.eye(classes)[speaker]
    x0[:, 8:12] += 4.0 * np.eye(classes)[emotion]
    views = [x0]
    for _ in range(2):
        v = x0.copy()
        v[:, 0:4] = rng.normal(size=(n, 4)) + 4.0 * np.eye(classes)[rng.integers(0, 4, n)]
        views.append(v)
    fit = np.arange(n) < 400
    removed = perturbation_probe(views, speaker, fit, seed=0)
    kept = perturbation_probe(views, emotion, fit, seed=0)
    assert removed.originals > 0.9 and kept.originals > 0.9
    # Removed: neither a probe fitted on the views nor one fitted on originals reads it.
    assert removed.views < removed.chance + 0.1
    assert removed.transfer < removed.chance + 0.1
    # Kept: both still read it.
    assert kept.views > 0.9 and kept.transfer > 0.9
    assert removed.chance == pytest.approx(0.25)
    # Labels of any type: names give the same result as their indices.
    assert perturbation_probe(views, [f"spk{v}" for v in speaker], fit, seed=0) == removed


def test_view_shift_counts_how_far_views_move_in_spreads_of_the_label():
    rng = np.random.default_rng(4)
    y = np.arange(4000) % 2
    # Two classes 3 apart along dimension 1, a wide spread of the other label elsewhere.
    x0 = rng.normal(size=(4000, 6)) * np.array([5.0, 0.1, 0.5, 1.0, 3.0, 1.0])
    x0[:, 1] += 3.0 * y
    fit = np.arange(4000) < 3000
    itself = perturbation_probe([x0, x0.copy()], y, fit)
    shifted = perturbation_probe([x0, x0 + np.array([0.0, 0.0, 0.0, 0.0, 6.0, 0.0])], y, fit)
    gap = np.sum((x0[y == 1].mean(0) - x0[y == 0].mean(0)) ** 2)  # about 9
    assert itself.view_shift == 0.0
    # A view moved by 6 (twice the classes' gap) is about 2 spreads from its original,
    # however wide the other dimensions are.
    assert shifted.view_shift == pytest.approx(np.sqrt(36.0 / gap), rel=1e-9)
    assert shifted.view_shift == pytest.approx(2.0, rel=0.05)
