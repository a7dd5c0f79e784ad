"""Tiny real caches for the listening-page tests, and a reader of what a page shows.

The corpus is ``pipeline.testing.prep_corpus``'s (12 synthetic clips of 0.25-0.4 s and two broken on
purpose), perturbed for real (WORLD, Zarr shards) with the settings given.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.testing.prep_corpus import make_corpus


def make_cache(
    root: Path,
    kinds: tuple[str, ...],
    views: int,
    shard_size: int = 5,
    rename: Mapping[str, str] | None = None,
) -> Path:
    """The corpus under ``root`` with real view sets of ``kinds`` (labels renamed by
    ``rename``, see :func:`make_corpus`); the manifest path."""
    path = make_corpus(root, rename=rename)
    settings = PerturbSettings(kinds=kinds, views=views, shard_size=shard_size, seed=9)
    with ThreadPoolExecutor(1) as pool:
        run_perturb(path, settings, fixed_executor(pool), cache_dir=root / "cache", progress=False)
    return path


class PageCells(HTMLParser):
    """The cells of a listening page as parsed HTML (no browser): for every ``td.cell``,
    its section's key, its row's clip id, its view index and its audio/image sources."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.key: str | None = None
        self.clip: str | None = None
        self.cells: list[dict[str, str]] = []
        self.rows: list[dict[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "data-key" in a:
            self.key = a["data-key"]
        elif tag == "tr" and "data-clip" in a:
            self.clip = a["data-clip"]
            self.rows.append({"key": self.key or "", **a})
        elif tag == "td" and "cell" in a.get("class", "").split():
            self.cells.append({"key": self.key or "", "clip": self.clip or "", **a})
        elif tag in ("audio", "img") and self.cells and "src" in a:
            self.cells[-1][tag] = a["src"]
