"""Checks on figures written by the toolkit."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def assert_real_png(path: Path, min_bytes: int = 4000) -> None:
    """``path`` is a PNG of at least ``min_bytes`` that holds a drawing: a blank figure is
    one colour, a drawn one has many distinct values."""
    from matplotlib.image import imread

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_bytes
    pixels = imread(path)[..., :3]
    assert pixels.std() > 0.05
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
