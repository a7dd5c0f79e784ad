"""The statistics layer (pipeline/stats/): metrics, the probe, cross-fitting, the bootstrap
and the originals/views/transfer protocol, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.stats.bootstrap import (
    balanced_accuracy_interval,
    bootstrap_interval,
    paired_difference,
)
from pipeline.stats.crossfit import linear_probe, stratified_folds
from pipeline.stats.metrics import balanced_accuracy, uar
from pipeline.stats.probe import fit_predict, one_hot
from pipeline.stats.protocol import (
    condition_predictions,
    cross_fitted_correct,
    label_only_probe,
    other_label_features,
)


def test_balanced_accuracy_pools_the_views_of_a_clip_into_its_class():
    # Class 0: 3 clips x 2 views, 4 right; class 1: 1 clip x 2 views, 1 right.
    y = np.array([0, 0, 0, 1])
    correct = np.array([[1, 1], [1, 1], [0, 0], [1, 0]])
    assert balanced_accuracy(y, correct) == pytest.approx((4 / 6 + 1 / 2) / 2)
    # One prediction per clip: the mean recall over the classes in the truth.
    assert uar([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # A class predicted but absent from the truth adds no zero.
    assert uar([0, 0], [0, 2]) == pytest.approx(1 / 2)
    assert math.isnan(balanced_accuracy([], []))


def test_one_hot_and_the_other_label_features():
    assert one_hot([2, 0, 2], [0, 1, 2]).tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 1]]
    assert other_label_features(["b", "a", "b"]).tolist() == [[0, 1], [1, 0], [0, 1]]


def test_the_bootstrap_draws_each_resample_from_one_seeded_generator():
    # The draw rule that keeps the published intervals: for each resample, for each group,
    # rng.integers(0, n, n) from default_rng(seed).
    seen = []

    def record(a, b):
        seen.append(a.copy())
        return 0.0

    groups = [(np.arange(5), np.zeros(5)), (np.arange(3), np.zeros(3))]
    bootstrap_interval(groups, record, seed=7, resamples=4)
    rng = np.random.default_rng(7)
    expected = [np.arange(5), np.arange(3)]  # the point estimate sees the groups unchanged
    for _ in range(4):
        expected += [rng.integers(0, 5, 5), rng.integers(0, 3, 3)]
    assert [s.tolist() for s in seen] == [e.tolist() for e in expected]


def test_a_two_clip_bootstrap_spans_every_resample_outcome():
    # y = [0, 1], the first right, the second wrong: the four equally likely resamples give
    # balanced accuracy 1 (first twice), 0 (second twice) or 0.5 (one of each).
    point, low, high = balanced_accuracy_interval(np.array([0, 1]), np.array([1, 0]), seed=0)
    assert (point, low, high) == (0.5, 0.0, 1.0)
    # All right: every resample scores 1, an interval of zero width.
    assert balanced_accuracy_interval(np.array([0, 1, 1]), np.ones(3), seed=0) == (1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_interval([], uar))


def test_a_paired_difference_of_identical_runs_is_exactly_zero():
    truth = np.array([0, 1, 2, 0, 1, 2])
    a = np.array([0, 1, 1, 0, 2, 2])
    got = paired_difference([(truth, a, a.copy())], seed=3)
    assert got == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "seeds": 1}
    # Not-scored clips (-1) are dropped from both runs: b right on the 4 scored clips, a on 2.
    b = np.array([0, 1, 2, 0, -1, -1])
    got = paired_difference([(truth, b, a)], seed=3)
    assert got["difference"] == pytest.approx(1.0 - uar(truth[:4], a[:4]))


def test_stratified_folds_score_every_clip_once_and_keep_class_shares():
    y = np.repeat([0, 1, 2], [10, 5, 15])
    folds = stratified_folds(y, 5, seed=11)
    scored = np.concatenate([s for _, s in folds])
    assert sorted(scored.tolist()) == list(range(30))
    for fit, s in folds:
        assert not set(fit.tolist()) & set(s.tolist())
        assert np.bincount(y[s], minlength=3).tolist() == [2, 1, 3]
    assert [s.tolist() for _, s in stratified_folds(y, 5, 11)] == [s.tolist() for _, s in folds]


def separable(n: int = 40, seed: int = 0):
    """Two classes one unit apart on the first axis, noise 0.05: any linear probe is exact."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(scale=0.05, size=(n, 3))
    x[:, 0] += y
    return x, y


def test_the_probe_and_the_cross_fitted_probe_read_a_separable_label_exactly():
    x, y = separable()
    assert (fit_predict(x[:20], y[:20], x[20:]) == y[20:]).all()
    result = linear_probe(x, y, folds=4, seed=0)
    assert (result.balanced_accuracy, result.chance, result.folds) == (1.0, 0.5, 4)


def test_the_three_conditions_tell_a_removed_label_from_a_kept_one():
    x, y = separable()
    # Views that keep the label (the same clips with the noise axes redrawn) and views that
    # remove it (every view the same point): views and transfer are exact for the first,
    # chance for the second (identical inputs get one class).
    kept = x.copy()
    kept[:, 1:] = np.random.default_rng(1).normal(scale=0.05, size=(len(x), 2))
    removed = np.full_like(x, 0.5)
    for views, right in ((kept, 1.0), (removed, 0.5)):
        correct = cross_fitted_correct(x, views[:, None, :], y, seed=0, folds=4)
        assert correct["originals"].all()
        assert balanced_accuracy(y, correct["transfer"]) == right
        assert balanced_accuracy(y, correct["views"]) == right
    # One probe per view (the trainer's) or one over all views: the same on identical views.
    fit, scored = np.arange(20), np.arange(20, 40)
    both = np.stack([kept, kept], axis=1)
    pooled = condition_predictions(x, both, y, fit, scored, pool_views=True)
    per_view = condition_predictions(x, both, y, fit, scored, pool_views=False)
    assert pooled["views"].shape == (20, 2)
    assert (pooled["views"] == per_view["views"]).all()
    assert (pooled["transfer"] == y[scored, None]).all()


def test_the_other_label_reference_reads_a_label_tied_to_the_other():
    # Emotion is a function of the speaker (speakers 0, 1 -> emotion 0; 2, 3 -> emotion 1):
    # the speaker label alone predicts the emotion exactly, far above chance (1/2).
    speaker = np.tile([0, 1, 2, 3], 10)
    emotion = speaker // 2
    assert label_only_probe(speaker, emotion, folds=5, seed=0).balanced_accuracy == 1.0
