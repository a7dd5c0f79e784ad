"""Figures: each plot writes a real PNG that holds a drawing, not a blank canvas."""

from __future__ import annotations

import json

import numpy as np

from trainer.plots import (
    plot_accuracy_curves,
    plot_accuracy_vs_views,
    plot_loss_curves,
    plot_tsne,
    read_metrics,
    tsne_2d,
)


def assert_real_png(path, min_bytes=4000):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_bytes
    pixels = imread(path)[..., :3]
    # A blank figure is one colour; a drawn one has many distinct values.
    assert pixels.std() > 0.05
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_curves_from_metrics_jsonl(tmp_path):
    rows = [
        {
            "epoch": e,
            "train_ce": 2.0 / e,
            "train_consistency": 0.1 * e,
            "train_adv": 1.5 + 0.01 * e,
            "train_acc_task": 0.2 + 0.05 * e,
            "train_acc_adv": 0.5 - 0.03 * e,
            "val_acc_task": 0.2 + 0.04 * e,
            "val_acc_adv": 0.4 - 0.02 * e,
        }
        for e in range(1, 9)
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_metrics(path) == rows
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
