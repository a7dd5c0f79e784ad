"""Linear probes: how much of a label a frozen embedding still carries (docs/evaluation.md).

The adversarial head's accuracy falling to chance shows only that *that* head was beaten.
Disentanglement is measured here instead, with a fresh logistic regression on frozen
embeddings (view 0). A probe for the discarded label y- that stays well above chance means
the information is still there (leakage); the same probe on the un-fine-tuned backbone
gives the starting point, and a probe for the kept label y+ always stands next to it.

The main protocol (:func:`held_out_probe`) fits the probe on the **training split's**
embeddings and scores it on the **test split**, with a bootstrap 95 % interval over test
clips (:func:`bootstrap_interval`); :func:`paired_difference` compares two runs on the
same test clips. The older figure, cross-validation inside the test split
(:func:`linear_probe`), stays as a secondary column: with a few hundred test clips for
hundreds of dimensions it is noisy and it never sees the training distribution.

Scores are balanced accuracy (mean recall over the classes present in the scored truth,
``trainer.metrics.uar``), whose chance level is ``1 / K`` for ``K`` classes whatever the
class priors, so probes on imbalanced labels stay comparable.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trainer.metrics import uar

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
DEFAULT_BOOTSTRAP = 1000  # resamples of the test clips for a 95 % percentile interval
CONFIDENCE = 0.95


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


# ----- the main protocol: fit on train, score on test ----------------------------------------
def _fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, max_iter: int = 2000
) -> np.ndarray:
    """Standardise on train, fit a logistic regression on train, predict test."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    with warnings.catch_warnings():
        # A probe that has not fully converged is still a valid (if weak) probe.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        probe.fit(x_train, y_train)
    return probe.predict(x_test)


def fit_accuracy(x: np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    """Accuracy of the standardised logistic regression fitted on ``x`` (n, D) and scored on
    the same clips: how much of ``y`` a linear readout *can* find there (the reference for
    the adversary's competence, ``trainer/adversary.py``); NaN with fewer than 2 classes."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(_fit_predict(x, y, x) == y))


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
    predictions[seen] = _fit_predict(x_train, y_train, x_test[seen])
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


def one_hot(labels: Sequence[int] | np.ndarray, classes: Sequence[int] | np.ndarray) -> np.ndarray:
    """(n, len(classes)) float indicator of ``labels`` over ``classes``."""
    labels = np.asarray(labels)
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


def held_out_label_only_probe(
    y_task_train: Sequence[int] | np.ndarray,
    y_adv_train: Sequence[int] | np.ndarray,
    y_task_test: Sequence[int] | np.ndarray,
    y_adv_test: Sequence[int] | np.ndarray,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> HeldOutProbe:
    """:func:`held_out_probe` of y- from the y+ label alone (one-hot): the level an
    embedding that knows only y+ reaches on these splits (the reference, not chance)."""
    classes = np.unique(np.concatenate([np.asarray(y_task_train), np.asarray(y_task_test)]))
    return held_out_probe(
        one_hot(y_task_train, classes),
        y_adv_train,
        one_hot(y_task_test, classes),
        y_adv_test,
        seed=seed,
        bootstrap=bootstrap,
    )


@dataclass(frozen=True)
class PerturbationProbe:
    """How much of one label an embedding keeps on originals and on perturbed views of the
    same clips (docs/evaluation.md, "Where the information is").

    Balanced accuracies of held-out probes (fitted on the training clips, scored on the
    test clips): ``originals`` on view 0; ``views`` fitted and scored on the perturbed
    views (mean over views); ``transfer`` fitted on originals and scored on the test clips'
    perturbed views (mean over views). ``view_shift``: how far the views lie from their
    originals in units of the spread between the label's class centroids (:func:`view_shift`).
    An encoder invariant to the perturbation scores on originals what it scores on views.
    """

    originals: float
    views: float
    transfer: float
    view_shift: float
    chance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perturbation_probe(
    views: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    fit: np.ndarray,
    seed: int = 0,
) -> PerturbationProbe:
    """:class:`PerturbationProbe` of ``labels`` from ``views`` (view 0 the originals, then
    at least one perturbed view, each (n, D) with rows aligned); ``fit``: boolean (n,), the
    clips the probes are fitted on (the others are scored); ``labels`` of any type."""
    if len(views) < 2:
        raise ValueError("perturbation_probe needs the originals and at least one view")
    _, y = np.unique(np.asarray(labels), return_inverse=True)  # any labels -> 0..K-1
    fit = np.asarray(fit, dtype=bool)
    score = ~fit
    x0, perturbed = views[0], views[1:]

    def probe(x_fit: np.ndarray, x_score: np.ndarray) -> HeldOutProbe:
        return held_out_probe(x_fit[fit], y[fit], x_score[score], y[score], seed, bootstrap=0)

    originals = probe(x0, x0)
    return PerturbationProbe(
        originals=originals.balanced_accuracy,
        views=float(np.mean([probe(x, x).balanced_accuracy for x in perturbed])),
        transfer=transfer_probe(x0[fit], y[fit], [x[score] for x in perturbed], y[score], seed),
        view_shift=view_shift(x0, perturbed, y),
        chance=originals.chance,
    )


def transfer_probe(
    x_fit: np.ndarray,
    y_fit: Sequence[int] | np.ndarray,
    scored_views: Sequence[np.ndarray],
    y_scored: Sequence[int] | np.ndarray,
    seed: int = 0,
) -> float:
    """Mean over ``scored_views`` (perturbed views of the same scored clips, rows aligned
    with ``y_scored``) of the balanced accuracy of :func:`held_out_probe` fitted on the
    originals ``x_fit``: whether the originals' readout survives the perturbation."""
    return float(
        np.mean(
            [
                held_out_probe(x_fit, y_fit, x, y_scored, seed, bootstrap=0).balanced_accuracy
                for x in scored_views
            ]
        )
    )


def view_shift(
    originals: np.ndarray, views: Sequence[np.ndarray], labels: Sequence[Any] | np.ndarray
) -> float:
    """How far a clip's perturbed embeddings lie from its original, in units of the spread
    between the classes of ``labels`` (the discarded label y-: the speaker for the emotion
    task): ``sqrt(mean ||x_view - x_orig||^2 / mean_{a<b} ||mu_a - mu_b||^2)`` with ``mu``
    the class centroids of ``originals`` (n, D); ``views``: (n, D) each, rows aligned.

    1 means a view moves a clip as far as the distance between two classes' centroids: a
    perturbation meant to remove y- then moves the embedding by a y- difference, i.e. the
    encoder is *not* invariant to it where y- lives. Unlike a distance over the total
    variance (which the kept label dominates after training, so that every view looks
    close), this is in the discarded label's own units. NaN with fewer than two classes."""
    x0 = np.asarray(originals, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        return float("nan")
    centroids = np.stack([x0[y == c].mean(axis=0) for c in classes])
    gaps = [
        np.sum((centroids[a] - centroids[b]) ** 2)
        for a in range(len(classes))
        for b in range(a + 1, len(classes))
    ]
    spread = float(np.mean(gaps))
    moved = np.mean([np.sum((np.asarray(x, np.float64) - x0) ** 2, axis=1).mean() for x in views])
    return float(np.sqrt(moved / spread)) if spread > 0 else float("inf")


# ----- intervals over test clips --------------------------------------------------------------
Metric = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_interval(
    groups: Sequence[tuple[np.ndarray, ...]],
    metric: Metric,
    seed: int = 0,
    resamples: int = DEFAULT_BOOTSTRAP,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """``(point, low, high)`` of the mean over ``groups`` of ``metric(*group)``.

    Each group (one seed's test clips: ``(truth, prediction)``, or ``(truth, a, b)`` with a
    metric of three arrays) is resampled with replacement on its own, the same draw for all
    its arrays, ``resamples`` times from a generator seeded by ``seed``; ``low``/``high``
    are the percentile interval at ``confidence``. With one group this is the usual
    bootstrap over test clips; with several it describes the mean over seeds, each seed's
    test set resampled (training is held fixed: the interval covers test-set sampling only).

    Resampling is not stratified by class on purpose: a class with one or two test clips
    then drops out of some resamples, so a mean-over-classes metric (UAR) can sit near an
    edge of its interval, but a difference that rests on such a clip gets an interval that
    reaches 0. Resampling within classes would keep every class but give a one-clip class
    no variance at all, an interval of zero width for a difference made by one clip.
    """
    arrays = [tuple(np.asarray(a) for a in group) for group in groups]
    if not arrays or any(len(g[0]) == 0 for g in arrays):
        return float("nan"), float("nan"), float("nan")
    point = float(np.mean([metric(*g) for g in arrays]))
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        values = []
        for g in arrays:
            idx = rng.integers(0, len(g[0]), len(g[0]))
            values.append(metric(*(a[idx] for a in g)))
        stats[r] = np.mean(values)
    finite = stats[np.isfinite(stats)]
    if not finite.size:
        return point, float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return point, float(low), float(high)


def paired_difference(
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    metric: Metric = uar,
    seed: int = 0,
    resamples: int = DEFAULT_BOOTSTRAP,
) -> dict[str, float]:
    """Difference ``metric(truth, a) - metric(truth, b)`` between two runs, averaged over
    seeds that share their test clips, with a paired bootstrap 95 % interval.

    ``groups``: per shared seed ``(truth, pred_a, pred_b)`` on the same test clips in the
    same order (pred -1 = not scored, dropped from both). Returns ``{"difference",
    "ci_low", "ci_high", "seeds"}``; an interval that excludes 0 means the difference is
    larger than test-set sampling explains (training variation is not covered).
    """
    kept = []
    for truth, a, b in groups:
        truth, a, b = np.asarray(truth), np.asarray(a), np.asarray(b)
        if not (len(truth) == len(a) == len(b)):
            raise ValueError("paired groups must hold the same clips")
        scored = (a >= 0) & (b >= 0)
        kept.append((truth[scored], a[scored], b[scored]))

    def diff(truth: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return metric(truth, a) - metric(truth, b)

    point, low, high = bootstrap_interval(kept, diff, seed=seed, resamples=resamples)
    return {"difference": point, "ci_low": low, "ci_high": high, "seeds": len(kept)}
