"""Linear probes: how much of a label a frozen embedding still carries (DESIGN.md section 6).

The adversarial head's accuracy falling to chance shows only that *that* head was beaten.
Disentanglement is measured here instead: a fresh logistic regression is fitted on frozen
embeddings of the test set (view 0) and scored by stratified cross-validation. A probe for
the discarded label y- that stays well above chance means the information is still there
(leakage); the same probe on the un-fine-tuned backbone gives the starting point.

Scores are balanced accuracy (mean per-class recall), whose chance level is ``1 / K`` for
``K`` classes whatever the class priors, so probes on imbalanced labels stay comparable.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5


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
    max_iter: int = 2000,
) -> ProbeResult:
    """Balanced accuracy of a logistic-regression probe of ``labels`` from ``embeddings``.

    ``embeddings``: float (n, D); ``labels``: int (n,). Features are standardised inside
    each training fold (a Pipeline, so no statistic of a held-out fold leaks into the fit).
    The folds are a shuffled :class:`~sklearn.model_selection.StratifiedKFold` seeded by
    ``seed``, so the same inputs give the same number. ``folds`` is lowered to the size of
    the smallest kept class when needed (at least 2).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed % (2**32))
    predicted = np.empty_like(y)
    per_fold = []
    for train_idx, test_idx in splitter.split(x, y):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
        with warnings.catch_warnings():
            # A probe that has not fully converged is still a valid (if weak) probe.
            warnings.simplefilter("ignore", category=UserWarning)
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", category=ConvergenceWarning)
            probe.fit(x[train_idx], y[train_idx])
        predicted[test_idx] = probe.predict(x[test_idx])
        per_fold.append(balanced_accuracy_score(y[test_idx], predicted[test_idx]))
    return ProbeResult(
        balanced_accuracy=float(balanced_accuracy_score(y, predicted)),
        fold_std=float(np.std(per_fold, ddof=1)),
        chance=1.0 / len(keep),
        classes=len(keep),
        samples=len(y),
        folds=n_folds,
        dropped=dropped,
    )


def label_probes(
    embeddings: np.ndarray,
    y_task: Sequence[int] | np.ndarray,
    y_adv: Sequence[int] | np.ndarray,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, ProbeResult]:
    """Probes of both labels on the same embeddings: ``{"task": y+, "adv": y-}``."""
    return {
        "task": linear_probe(embeddings, y_task, folds=folds, seed=seed),
        "adv": linear_probe(embeddings, y_adv, folds=folds, seed=seed),
    }


def label_only_probe(
    y_task: Sequence[int] | np.ndarray,
    y_adv: Sequence[int] | np.ndarray,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> ProbeResult:
    """The same probe of y- from the y+ label alone (one-hot), on the same samples.

    When the two labels are correlated (a speaker mostly produces one emotion), an embedding
    that knows only y+ already predicts y- this well: it is the reference a y- probe must be
    compared with, not chance. Above it, the embedding carries y- information beyond y+.
    """
    y_task = np.asarray(y_task)
    classes = np.unique(y_task)
    one_hot = (y_task[:, None] == classes[None, :]).astype(np.float64)
    return linear_probe(one_hot, y_adv, folds=folds, seed=seed)
