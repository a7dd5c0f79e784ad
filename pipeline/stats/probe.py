"""The one linear probe: a standardised logistic regression (docs/evaluation.md, "Leakage").

:func:`make_probe` is the estimator every probe in the toolkit fits (the trainer's leakage
probes, the adversary's reference, ``ncore-prep selectivity``'s acoustic probes):
``[SimpleImputer(median) ->] StandardScaler -> LogisticRegression(C=1, max_iter=2000)``,
fitted with convergence warnings silenced (a probe that has not fully converged is still a
valid, if weak, probe). :func:`held_out_probe` is the main protocol: fitted on the
training split, scored on the test split, with the bootstrap interval of
``pipeline.stats.bootstrap``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.stats.bootstrap import DEFAULT_BOOTSTRAP, bootstrap_interval
from pipeline.stats.metrics import uar

MAX_ITER = 2000


def make_probe(impute: bool = False) -> Any:
    """A fresh probe (scikit-learn Pipeline); ``impute``: median-impute NaN features first
    (acoustic features undefined for a clip, e.g. F0 of an unvoiced one)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler(), LogisticRegression(max_iter=MAX_ITER, C=1.0)]
    if impute:
        from sklearn.impute import SimpleImputer

        steps.insert(0, SimpleImputer(strategy="median", keep_empty_features=True))
    return make_pipeline(*steps)


def fit_probe(x: np.ndarray, y: np.ndarray, impute: bool = False) -> Any:
    """:func:`make_probe` fitted on ``x`` (n, D) and ``y`` (n,)."""
    from sklearn.exceptions import ConvergenceWarning

    probe = make_probe(impute)
    with warnings.catch_warnings():
        # A probe that has not fully converged is still a valid (if weak) probe.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        probe.fit(x, y)
    return probe


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Standardise on train, fit a logistic regression on train, predict test."""
    return fit_probe(x_train, y_train).predict(x_test)


def fit_accuracy(x: np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """Accuracy of the probe fitted on ``x`` (n, D) and scored on the same clips: how much
    of ``y`` a linear readout *can* find there (the reference for the adversary's
    competence, ``trainer/adversary.py``); NaN with fewer than 2 classes."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(fit_predict(x, y, x) == y))


def one_hot(labels: Sequence[int] | np.ndarray, classes: Sequence[int] | np.ndarray) -> np.ndarray:
    """(n, len(classes)) float indicator of ``labels`` over ``classes``."""
    labels = np.asarray(labels)
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


@dataclass(frozen=True)
class HeldOutProbe:
    """A linear probe fitted on training-split embeddings and scored on test clips.

    ``balanced_accuracy``: mean recall over the classes present in the scored test truth
    (fraction in [0, 1]); ``ci_low``/``ci_high``: the bootstrap 95 % percentile interval of
    it over test clips (``bootstrap`` resamples); ``chance`` = ``1 / classes``. Test clips
    whose class never occurs in training cannot be predicted by any probe and are left out
    (``unseen``), e.g. every y- speaker under a speaker-held-out split, which then gives NaN.
    ``predictions`` (not in :meth:`to_dict`): the probe's class for every test clip, -1
    for the left-out ones, for paired comparisons between runs.
    """

    balanced_accuracy: float
    ci_low: float
    ci_high: float
    chance: float
    classes: int
    train_samples: int
    test_samples: int
    unseen: int
    bootstrap: int
    predictions: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "predictions"}


def held_out_probe(
    x_train: np.ndarray,
    y_train: Sequence[int] | np.ndarray,
    x_test: np.ndarray,
    y_test: Sequence[int] | np.ndarray,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> HeldOutProbe:
    """Fit a logistic-regression probe of ``y_train`` on ``x_train`` (float (n, D)) and
    score it on ``x_test``, with a bootstrap interval over the test clips drawn from
    ``seed``. NaN when train has fewer than two classes or no test clip is scorable."""
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if x_train.ndim != 2 or x_test.ndim != 2 or len(x_train) != len(y_train):
        raise ValueError(f"bad probe inputs: train {x_train.shape}/{y_train.shape}")
    if len(x_test) != len(y_test):
        raise ValueError(f"bad probe inputs: test {x_test.shape}/{y_test.shape}")
    seen = np.isin(y_test, np.unique(y_train))
    classes = len(np.unique(y_test[seen]))
    predictions = np.full(len(y_test), -1, dtype=np.int64)
    if len(np.unique(y_train)) < 2 or classes < 1:
        nan = float("nan")
        return HeldOutProbe(
            balanced_accuracy=nan,
            ci_low=nan,
            ci_high=nan,
            chance=1.0 / classes if classes else nan,
            classes=classes,
            train_samples=len(y_train),
            test_samples=int(seen.sum()),
            unseen=int((~seen).sum()),
            bootstrap=0,
            predictions=predictions,
        )
    predictions[seen] = fit_predict(x_train, y_train, x_test[seen])
    point, low, high = bootstrap_interval(
        [(y_test[seen], predictions[seen])], uar, seed=seed, resamples=bootstrap
    )
    return HeldOutProbe(
        balanced_accuracy=point,
        ci_low=low,
        ci_high=high,
        chance=1.0 / classes,
        classes=classes,
        train_samples=len(y_train),
        test_samples=int(seen.sum()),
        unseen=int((~seen).sum()),
        bootstrap=bootstrap,
        predictions=predictions,
    )
