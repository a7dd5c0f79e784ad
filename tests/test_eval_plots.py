"""Figures: each plot writes a real PNG that holds a drawing, not a blank canvas."""

from __future__ import annotations

import numpy as np

from pipeline.testing.figures import assert_real_png
from trainer.plots import (
    plot_accuracy_curves,
    plot_accuracy_vs_views,
    plot_loss_curves,
    plot_tsne,
    tsne_2d,
)
from trainer.rundir import EpochRow, read_epoch_rows, write_epoch_rows


def test_curves_from_metrics_jsonl(tmp_path):
    rows = [
        EpochRow(
            epoch=e,
            step=10 * e,
            lr=1e-3,
            train_ce=2.0 / e,
            train_consistency=0.1 * e,
            train_adv=1.5 + 0.01 * e,
            train_acc_task=0.2 + 0.05 * e,
            train_acc_adv=0.5 - 0.03 * e,
            grl_alpha=1.0,
            val_acc_task=0.2 + 0.04 * e,
            val_acc_adv=0.4 - 0.02 * e,
            train_clips=100,
            seconds=1.0,
        )
        for e in range(1, 9)
    ]
    path = tmp_path / "metrics.jsonl"
    write_epoch_rows(path, rows)
    assert read_epoch_rows(path) == rows
    assert_real_png(plot_loss_curves(rows, tmp_path / "loss.png", "loss"))
    assert_real_png(plot_accuracy_curves(rows, tmp_path / "acc.png", "acc"))
    # Same data, same bytes (no timestamp in the file).
    again = plot_loss_curves(rows, tmp_path / "loss2.png", "loss")
    assert again.read_bytes() == (tmp_path / "loss.png").read_bytes()


def test_tsne_keeps_planted_clusters_apart(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 12)) + 12.0 * np.eye(12)[labels]
    points = tsne_2d(x, seed=1)
    assert points.shape == (90, 2)
    centres = np.stack([points[labels == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(points[labels == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread
    assert_real_png(plot_tsne(points, labels, ["a", "b", "c"], tmp_path / "tsne.png", "t"))


def test_accuracy_vs_views(tmp_path):
    out = plot_accuracy_vs_views(
        [1, 2, 3], [0.6, 0.62, 0.61], [0.01, None, 0.02], tmp_path / "n.png"
    )
    assert_real_png(out, min_bytes=5000)
