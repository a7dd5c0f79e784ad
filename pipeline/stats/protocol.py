"""The originals/views/transfer protocol and the other-label reference.

How much of a label survives a perturbation is read with three probes (docs/evaluation.md,
"Where the information is"; docs/selectivity.md): ``originals`` (fitted and scored on the
unperturbed clips), ``views`` (fitted and scored on perturbed views) and ``transfer``
(fitted on originals, scored on the views of the scored clips). :func:`condition_predictions`
is the one fit-and-score step; the trainer runs it once on its train/test split
(:func:`perturbation_probe`, one probe per view), ``ncore-prep selectivity`` once per
stratified fold (:func:`cross_fitted_correct`, one probe over all views).

A probe of one label must be compared with what the *other* label alone predicts of it
(:func:`other_label_features`): on an entangled corpus (a speaker mostly produces one
emotion) that level, not chance, is the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.stats.bootstrap import DEFAULT_BOOTSTRAP
from pipeline.stats.crossfit import DEFAULT_FOLDS, ProbeResult, linear_probe, stratified_folds
from pipeline.stats.metrics import uar
from pipeline.stats.probe import HeldOutProbe, fit_probe, held_out_probe, one_hot

CONDITIONS = ("originals", "views", "transfer")


def condition_predictions(
    x_orig: np.ndarray,
    x_views: np.ndarray,
    y: np.ndarray,
    fit: np.ndarray,
    scored: np.ndarray,
    pool_views: bool = True,
    impute: bool = False,
) -> dict[str, np.ndarray]:
    """Predictions for the ``scored`` clips of probes fitted on the ``fit`` clips (index
    arrays into the rows), in the three conditions.

    ``x_orig`` (clips, D), ``x_views`` (clips, K, D), ``y`` (clips,). Returns
    ``{"originals": (s, 1), "views": (s, K), "transfer": (s, K)}``. ``pool_views``: one
    ``views`` probe fitted on all K views of the fit clips; otherwise one probe per view,
    fitted and scored on that view. ``impute``: see ``pipeline.stats.probe.make_probe``.
    """
    x_orig = np.asarray(x_orig, dtype=np.float64)
    x_views = np.asarray(x_views, dtype=np.float64)
    _, k, d = x_views.shape
    s = len(scored)
    on_orig = fit_probe(x_orig[fit], y[fit], impute)
    flat = x_views[scored].reshape(-1, d)
    out = {
        "originals": on_orig.predict(x_orig[scored]).reshape(s, 1),
        "transfer": on_orig.predict(flat).reshape(s, k),
    }
    if pool_views:
        on_views = fit_probe(x_views[fit].reshape(-1, d), np.repeat(y[fit], k), impute)
        out["views"] = on_views.predict(flat).reshape(s, k)
    else:
        per_view = [fit_probe(x_views[fit, j], y[fit], impute) for j in range(k)]
        out["views"] = np.stack(
            [probe.predict(x_views[scored, j]) for j, probe in enumerate(per_view)], axis=1
        )
    return out


def cross_fitted_correct(
    x_orig: np.ndarray, x_views: np.ndarray, y: np.ndarray, seed: int, folds: int = DEFAULT_FOLDS
) -> dict[str, np.ndarray]:
    """Out-of-fold correctness of the three probes (views pooled, NaN features imputed), per
    clip: ``{"originals": (clips, 1), "views": (clips, K), "transfer": (clips, K)}``
    booleans. Folds are :func:`~pipeline.stats.crossfit.stratified_folds` over clips; a
    clip's views are always in the clip's fold."""
    n, k, _ = np.shape(x_views)
    out = {
        "originals": np.zeros((n, 1), dtype=bool),
        "views": np.zeros((n, k), dtype=bool),
        "transfer": np.zeros((n, k), dtype=bool),
    }
    for fit, scored in stratified_folds(y, folds, seed):
        predicted = condition_predictions(x_orig, x_views, y, fit, scored, impute=True)
        for condition in CONDITIONS:
            out[condition][scored] = predicted[condition] == y[scored, None]
    return out


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


def _seen(y_fit: np.ndarray, y_scored: np.ndarray) -> np.ndarray | None:
    """Which scored clips a probe fitted on ``y_fit`` can predict (their class occurs in
    fit); None when fit has fewer than two classes or no scored clip is predictable."""
    seen = np.isin(y_scored, np.unique(y_fit))
    return None if len(np.unique(y_fit)) < 2 or not seen.any() else seen


def perturbation_probe(
    views: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    fit: np.ndarray,
    seed: int = 0,
) -> PerturbationProbe:
    """:class:`PerturbationProbe` of ``labels`` from ``views`` (view 0 the originals, then
    at least one perturbed view, each (n, D) with rows aligned); ``fit``: boolean (n,), the
    clips the probes are fitted on (the others are scored, those whose class never occurs
    in fit left out); ``labels`` of any type. ``seed`` is kept for callers (no interval)."""
    if len(views) < 2:
        raise ValueError("perturbation_probe needs the originals and at least one view")
    _, y = np.unique(np.asarray(labels), return_inverse=True)  # any labels -> 0..K-1
    fit = np.asarray(fit, dtype=bool)
    x0, perturbed = views[0], views[1:]
    scored = np.flatnonzero(~fit)
    seen = _seen(y[fit], y[scored])
    shift = view_shift(x0, perturbed, y)
    if seen is None:
        classes = len(np.unique(y[scored][np.isin(y[scored], np.unique(y[fit]))]))
        nan = float("nan")
        return PerturbationProbe(nan, nan, nan, shift, 1.0 / classes if classes else nan)
    scored, truth = scored[seen], y[scored[seen]]
    predicted = condition_predictions(
        x0, np.stack(perturbed, axis=1), y, np.flatnonzero(fit), scored, pool_views=False
    )

    def mean_over_views(condition: str) -> float:
        return float(np.mean([uar(truth, p) for p in predicted[condition].T]))

    return PerturbationProbe(
        originals=uar(truth, predicted["originals"][:, 0]),
        views=mean_over_views("views"),
        transfer=mean_over_views("transfer"),
        view_shift=shift,
        chance=1.0 / len(np.unique(truth)),
    )


def transfer_probe(
    x_fit: np.ndarray,
    y_fit: Sequence[int] | np.ndarray,
    scored_views: Sequence[np.ndarray],
    y_scored: Sequence[int] | np.ndarray,
    seed: int = 0,
) -> float:
    """Mean over ``scored_views`` (perturbed views of the same scored clips, rows aligned
    with ``y_scored``) of the balanced accuracy of the probe fitted on the originals
    ``x_fit``: whether the originals' readout survives the perturbation (the ``transfer``
    condition of :func:`condition_predictions`). NaN when nothing can be scored."""
    y_fit, y_scored = np.asarray(y_fit), np.asarray(y_scored)
    seen = _seen(y_fit, y_scored)
    if seen is None:
        return float("nan")
    probe = fit_probe(np.asarray(x_fit, dtype=np.float64), y_fit)
    return float(
        np.mean(
            [
                uar(y_scored[seen], probe.predict(np.asarray(x, dtype=np.float64)[seen]))
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


# ----- the other-label reference ---------------------------------------------------------------
def other_label_features(other: Sequence[int] | np.ndarray) -> np.ndarray:
    """The other label as features: one-hot over its classes present in ``other``. A probe
    of a label from these reaches what an embedding that knows only the other label would."""
    other = np.asarray(other)
    return one_hot(other, np.unique(other))


def label_only_probe(
    y_task: Sequence[int] | np.ndarray,
    y_adv: Sequence[int] | np.ndarray,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> ProbeResult:
    """The cross-validated probe of y- from the y+ label alone (one-hot), on the same
    samples: the reference a y- probe must be compared with, not chance."""
    return linear_probe(other_label_features(y_task), y_adv, folds=folds, seed=seed)


def held_out_label_only_probe(
    y_task_train: Sequence[int] | np.ndarray,
    y_adv_train: Sequence[int] | np.ndarray,
    y_task_test: Sequence[int] | np.ndarray,
    y_adv_test: Sequence[int] | np.ndarray,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> HeldOutProbe:
    """:func:`~pipeline.stats.probe.held_out_probe` of y- from the y+ label alone (one-hot):
    the level an embedding that knows only y+ reaches on these splits (the reference)."""
    classes = np.unique(np.concatenate([np.asarray(y_task_train), np.asarray(y_task_test)]))
    return held_out_probe(
        one_hot(y_task_train, classes),
        y_adv_train,
        one_hot(y_task_test, classes),
        y_adv_test,
        seed=seed,
        bootstrap=bootstrap,
    )
