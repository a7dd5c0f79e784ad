"""Figures as PNG files (matplotlib, Agg backend: no display needed).

- :func:`plot_loss_curves` / :func:`plot_accuracy_curves`: the paper's Figures 4 and 5 from
  a seed's ``metrics.jsonl`` (one row per epoch);
- :func:`plot_tsne`: Figures 6 to 9, t-SNE of test embeddings coloured by one label;
- :func:`plot_accuracy_vs_views`: Figure 3, test accuracy against the number of views N.

Every function returns the path it wrote. Figures are built on explicit ``Figure`` objects
(not pyplot's global state), so they are safe to call repeatedly from library code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 110


def _figure(width: float = 6.4, height: float = 4.2, rows: int = 1, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    # Fixed metadata (no software/date stamp) so the same data gives the same bytes.
    figure.savefig(tmp, format="png", metadata={"Software": None})
    os.replace(tmp, path)
    return path


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (one JSON object per line), in file order."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the rows that have a finite value for it."""
    epochs, values = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is None or not np.isfinite(float(value)):
            continue
        epochs.append(float(row.get("epoch", i + 1)))
        values.append(float(value))
    return epochs, values


def plot_loss_curves(
    rows: Sequence[dict[str, Any]], out: str | os.PathLike[str], title: str = ""
) -> Path:
    """Figure 4: training CE, consistency and adversarial loss per epoch (unweighted terms),
    one panel each because their scales differ by orders of magnitude."""
    terms = (
        ("train_ce", "cross-entropy L_CE (y+)"),
        ("train_consistency", "consistency L_REG"),
        ("train_adv", "adversarial L_GRL (y-)"),
    )
    figure, axes = _figure(6.4, 6.4, rows=3)
    for ax, (key, label) in zip(axes[:, 0], terms, strict=True):
        epochs, values = _series(rows, key)
        ax.plot(epochs, values, marker="o", markersize=3)
        ax.set_ylabel("loss")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, out)


def plot_accuracy_curves(
    rows: Sequence[dict[str, Any]], out: str | os.PathLike[str], title: str = ""
) -> Path:
    """Figure 5: accuracy of the task head (y+) and of the adversarial head (y-) per epoch,
    on training and validation data. The adversarial head falling to chance shows that the
    head was beaten, not that y- was removed (see the probes for that)."""
    figure, axes = _figure()
    ax = axes[0, 0]
    for key, label, style in (
        ("train_acc_task", "task head y+ (train)", "-"),
        ("val_acc_task", "task head y+ (val)", "--"),
        ("train_acc_adv", "adversarial head y- (train)", "-"),
        ("val_acc_adv", "adversarial head y- (val)", "--"),
    ):
        epochs, values = _series(rows, key)
        if values:
            ax.plot(epochs, [100 * v for v in values], style, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(figure, out)


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA initialisation, seeded) of (n, D) embeddings -> (n, 2).

    Perplexity is 30 or (n - 1) / 3 when n is small (t-SNE needs perplexity < n)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed % (2**32))
    # One OpenMP thread: on a 2-core machine scikit-learn's Barnes-Hut gradient ran ~30x
    # slower with 2 threads than with 1 (measured: 300 points, 24 s vs 1.3 s).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(x)


def plot_tsne(
    points: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    names: Sequence[str],
    out: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Figures 6-9: 2-D points (from :func:`tsne_2d`) coloured by ``labels`` (indices into
    ``names``), one legend entry per class present."""
    figure, axes = _figure(6.0, 5.0)
    ax = axes[0, 0]
    labels = np.asarray(labels)
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if len(names) > 10 else "tab10"]
    for index in sorted(set(labels.tolist())):
        mask = labels == index
        name = names[index] if 0 <= index < len(names) else str(index)
        ax.scatter(points[mask, 0], points[mask, 1], s=12, color=cmap(index % cmap.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.2, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(figure, out)


def plot_accuracy_vs_views(
    views: Sequence[int],
    means: Sequence[float],
    stds: Sequence[float | None],
    out: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Figure 3: test accuracy (fractions, plotted in %) against N, with ± sample std
    error bars where there is more than one seed."""
    figure, axes = _figure()
    ax = axes[0, 0]
    y = 100 * np.asarray(means, dtype=np.float64)
    err = np.asarray([0.0 if s is None else 100 * s for s in stds], dtype=np.float64)
    ax.errorbar(list(views), y, yerr=err, marker="o", capsize=3)
    ax.set_xticks(list(views))
    ax.set_xlabel("number of perturbed views N")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(figure, out)
