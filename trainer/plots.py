"""Figures as PNG files (matplotlib, Agg backend: no display needed).

- :func:`write_figures`: a run's figures under ``figures/`` (curves and t-SNE of one seed);
- :func:`plot_loss_curves` / :func:`plot_accuracy_curves`: the paper's Figures 4 and 5 from
  a seed's ``metrics.jsonl`` rows (``trainer.rundir.EpochRow``, one per epoch);
- :func:`plot_tsne`: Figures 6 to 9, t-SNE of test embeddings coloured by one label;
- :func:`plot_accuracy_vs_views`: Figure 3, test accuracy against the number of views N.

Every function returns the path it wrote (atomically, ``pipeline/atomic.py``). Figures are
built on explicit ``Figure`` objects (not pyplot's global state), so they are safe to call
repeatedly from library code.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes
from trainer.records import SummaryRecord
from trainer.rundir import EpochRow, RunDir, SeedDir, read_epoch_rows
from trainer.summary import recorded

DPI = 110


def _figure(width: float = 6.4, height: float = 4.2, rows: int = 1, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    figure.tight_layout()
    buffer = io.BytesIO()
    # Fixed metadata (no software/date stamp) so the same data gives the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return write_bytes(path, buffer.getvalue())


def _series(rows: Sequence[EpochRow], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of field ``key`` over the rows that have a finite value for it."""
    epochs, values = [], []
    for row in rows:
        value = getattr(row, key)
        if value is None or not np.isfinite(float(value)):
            continue
        epochs.append(float(row.epoch))
        values.append(float(value))
    return epochs, values


def plot_loss_curves(
    rows: Sequence[EpochRow], out: str | os.PathLike[str], title: str = ""
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
    rows: Sequence[EpochRow], out: str | os.PathLike[str], title: str = ""
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


def write_figures(run: RunDir, seed_dir: SeedDir, summary: SummaryRecord) -> list[Path]:
    """Figures 4-9 for one seed of ``run``: loss and accuracy curves, and t-SNE of the test
    embeddings coloured by each label, for the un-fine-tuned backbone and the fine-tuned
    model. Written under ``run/figures/``."""
    folder = run.figures
    written = []
    rows = read_epoch_rows(seed_dir.metrics)
    if rows:
        name = f"{run.name} (seed {seed_dir.seed})"
        written.append(plot_loss_curves(rows, folder / "loss_curves.png", name))
        written.append(plot_accuracy_curves(rows, folder / "accuracy_curves.png", name))
    data = seed_dir.read_embeddings()  # typed: no pickle, dtypes and shapes checked
    if len(data["clip_ids"]) >= 4:
        labels = {"task": data["y_task"], "adv": data["y_adv"]}
        names = {"task": summary.task_names, "adv": summary.adv_names}
        label_name = {
            "task": recorded(summary.info.task, "y+"),
            "adv": recorded(summary.info.adversarial_label, "y-"),
        }
        for model_name, key in (("backbone", "backbone_embeddings"), ("finetuned", "embeddings")):
            points = tsne_2d(data[key], seed=seed_dir.seed)
            for which in ("task", "adv"):
                title = f"{model_name}: test embeddings coloured by {label_name[which]}"
                out = folder / f"tsne_{model_name}_{label_name[which]}.png"
                written.append(plot_tsne(points, labels[which], names[which], out, title))
    return written
