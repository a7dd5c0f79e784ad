"""The one bootstrap: percentile intervals over test clips (docs/evaluation.md, "What the
intervals mean"; docs/selectivity.md).

Every interval in the toolkit comes from :func:`bootstrap_interval`: the clips of each group
are resampled with replacement (the same draw for all of the group's arrays), ``resamples``
times, from ``numpy.random.default_rng(seed)``; the interval is the percentile interval at
``confidence``. Callers derive ``seed`` from stable identifiers (``pipeline.rng.stable_seed``)
so that the same inputs give the same interval in every process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.stats.metrics import balanced_accuracy, uar

DEFAULT_BOOTSTRAP = 1000  # resamples of the test clips for a 95 % percentile interval
CONFIDENCE = 0.95

Metric = Callable[..., float]


def bootstrap_interval(
    groups: Sequence[tuple[np.ndarray, ...]],
    metric: Metric,
    seed: int = 0,
    resamples: int = DEFAULT_BOOTSTRAP,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """``(point, low, high)`` of the mean over ``groups`` of ``metric(*group)``.

    Each group (one seed's test clips: ``(truth, prediction)``, ``(truth, correct)`` or
    ``(truth, a, b)`` with a metric of three arrays; rows are clips) is resampled with
    replacement on its own, the same draw for all its arrays: for each resample, for each
    group in order, ``rng.integers(0, n, n)``. ``low``/``high`` are the percentile interval
    at ``confidence`` over the resamples whose statistic is finite. With one group this is
    the usual bootstrap over test clips; with several it describes the mean over seeds, each
    seed's test set resampled (training is held fixed: the interval covers test-set sampling
    only). ``resamples`` 0 gives the point and a NaN interval.

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


def balanced_accuracy_interval(
    y: np.ndarray, correct: np.ndarray, seed: int, resamples: int = DEFAULT_BOOTSTRAP
) -> tuple[float, float, float]:
    """Balanced accuracy of ``correct`` ((clips,) or (clips, K) booleans: K predictions per
    clip, one per view, pooled into the clip's class) with its 95 % interval over clips."""
    return bootstrap_interval([(y, correct)], balanced_accuracy, seed=seed, resamples=resamples)


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
