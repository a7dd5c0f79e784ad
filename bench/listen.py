"""Benchmark of ``ncore-prep listen`` (reported in the README, never asserted in tests).

Builds a corpus with 7 labels (the synthetic generator's voices, relabelled round-robin into
7 classes through the CSV importer; 0.6-2.5 s clips, like ReCANVo's), perturbs it for real
(both kinds, N = 5, shards of 16 clips), then times the listening page of 10 clips per label
(70 clips): both view sets and one, with one process and with one per core. Each page is
built 3 times into a fresh folder; the least time is reported.

Usage: ``.venv/bin/python bench/listen.py [--clips 140] [--root DIR] [--out FILE]``
(default ``bench/results/listen.json``; ``--root`` keeps the corpus and its cache for a second run).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ is on sys.path: share the machine description with bench/prep.py.
from prep import machine

LABELS = 7
PER_LABEL = 10
VIEWS = 5


def make_cache(root: Path, clips: int) -> Path:
    from pipeline.datasets import build_manifest
    from pipeline.datasets.synthetic import SyntheticConfig, generate
    from pipeline.prep import PerturbSettings, fixed_executor, process_executor, run_perturb

    path = root / "manifests" / "listen.json"
    if path.exists():
        return path
    data = root / "data"
    config = SyntheticConfig(clips=clips, emotions=6, min_duration=0.6, max_duration=2.5, seed=5)
    labels_csv = generate(data, config)
    with open(labels_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(labels_csv, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(rows[0])
        emotion = rows[0].index("emotion")
        for i, row in enumerate(rows[1:]):
            row[emotion] = f"class{i % LABELS}"
            out.writerow(row)
    manifest, _ = build_manifest("csv", data, "listen", seed=1, manifest_path=path)
    manifest.save(path)
    settings = PerturbSettings(views=VIEWS, shard_size=16, seed=42)
    with process_executor(2) as (pool, _):
        run_perturb(path, settings, fixed_executor(pool), cache_dir=root / "cache", progress=False)
    return path


def time_page(manifest: Path, out: Path, view_sets: tuple[str, ...], workers: int | None):
    from pipeline.listen import ListenOptions, build_page

    best = None
    for _ in range(3):
        if out.exists():
            shutil.rmtree(out)
        start = time.perf_counter()
        page = build_page(
            manifest, out, ListenOptions(view_sets=view_sets, per_label=PER_LABEL, workers=workers)
        )
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "view_sets": list(view_sets) or ["speaker", "emotion"],
        "workers": workers or "one per core",
        "clips": page.clips,
        "players": page.cells,
        "files": page.files,
        "audio_seconds": round(page.audio_seconds, 1),
        "shards_read": page.shards_read,
        "page_bytes": size,
        "seconds_best_of_3": round(best, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=140)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/listen.json"))
    args = parser.parse_args()
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        start = time.perf_counter()
        manifest = make_cache(root, args.clips)
        prep_seconds = time.perf_counter() - start
        rows = [
            time_page(manifest, Path(tmp) / "page", (), None),
            time_page(manifest, Path(tmp) / "page", (), 1),
            time_page(manifest, Path(tmp) / "page", ("speaker",), None),
        ]
    report = {
        "machine": before,
        "load_average_after": machine()["load_average"],
        "corpus": {"clips": args.clips, "labels": LABELS, "views": VIEWS, "shard_size": 16},
        "cache_seconds": round(prep_seconds, 1),
        "pages": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
