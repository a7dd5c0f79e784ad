"""Stratified cross-fitting: every clip scored by a probe that never saw it.

:func:`stratified_folds` is the one fold rule (a shuffled ``StratifiedKFold`` seeded by
``seed``), used by :func:`linear_probe` (the trainer's secondary "CV in test" figure,
docs/evaluation.md) and by the cross-fitted originals/views/transfer protocol of
``ncore-prep selectivity`` (``pipeline.stats.protocol.cross_fitted_correct``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.stats.metrics import uar
from pipeline.stats.probe import fit_predict

DEFAULT_FOLDS = 5


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit, scored)`` index pairs of a shuffled stratified ``folds``-fold split of the
    clips labelled ``y`` (n,), seeded by ``seed`` (taken modulo 2**32)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % (2**32))
    return list(splitter.split(np.zeros((len(y), 1)), y))


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated linear probe of one label on one set of embeddings.

    ``balanced_accuracy`` is computed on the pooled out-of-fold predictions of every kept
    sample (fraction in [0, 1]); ``fold_std`` is the sample standard deviation (ddof=1) of
    the per-fold balanced accuracies; ``chance`` is ``1 / classes``. Classes with fewer
    members than ``folds`` are dropped before fitting (``dropped`` samples), since a
    stratified split cannot place them in every fold.
    """

    balanced_accuracy: float
    fold_std: float
    chance: float
    classes: int
    samples: int
    folds: int
    dropped: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def nan_probe(classes: int, samples: int, dropped: int) -> ProbeResult:
    """The result when there is nothing to probe (fewer than two usable classes)."""
    chance = 1.0 / classes if classes else float("nan")
    return ProbeResult(float("nan"), float("nan"), chance, classes, samples, 0, dropped)


def linear_probe(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> ProbeResult:
    """Balanced accuracy of the probe (``pipeline.stats.probe``) of ``labels`` from
    ``embeddings``, cross-fitted over :func:`stratified_folds`.

    ``embeddings``: float (n, D); ``labels``: int (n,). Features are standardised inside
    each training fold (a Pipeline, so no statistic of a held-out fold leaks into the fit).
    ``folds`` is lowered to the size of the smallest kept class when needed (at least 2).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"embeddings must be (n, D) with n = len(labels); got {x.shape}, {y.shape}"
        )
    counts = Counter(y.tolist())
    # Keep classes that can appear in at least two folds; lower the fold count to fit them.
    keep = {label for label, count in counts.items() if count >= 2}
    n_folds = min(folds, min((counts[c] for c in keep), default=0))
    if n_folds >= 2:
        keep = {label for label in keep if counts[label] >= n_folds}
    mask = np.isin(y, sorted(keep))
    dropped = int(len(y) - mask.sum())
    if len(keep) < 2 or n_folds < 2:
        return nan_probe(len(keep) or len(counts), int(mask.sum()), dropped)
    x, y = x[mask], y[mask]

    predicted = np.empty_like(y)
    per_fold = []
    for fit, scored in stratified_folds(y, n_folds, seed):
        predicted[scored] = fit_predict(x[fit], y[fit], x[scored])
        per_fold.append(uar(y[scored], predicted[scored]))
    return ProbeResult(
        balanced_accuracy=uar(y, predicted),
        fold_std=float(np.std(per_fold, ddof=1)),
        chance=1.0 / len(keep),
        classes=len(keep),
        samples=len(y),
        folds=n_folds,
        dropped=dropped,
    )
