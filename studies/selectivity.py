"""Selectivity of p_s and p_e on each synthetic preset, and the p_e band-layout sweep.

Usage (CPU, about 10 minutes on 2 quiet cores; the numbers go to docs/results.md)::

    .venv/bin/python studies/selectivity.py --out /tmp/ncore-selectivity

For each preset (``premise``, ``hard-case``) a corpus of 240 clips with speaker and emotion
*independent* (entanglement 0: on an entangled corpus every probe of one label also reads
the other), 6 speakers x 4 emotions; speaker and emotion views (N = 2, DIO, the default
parameters) by ``ncore-prep perturb``'s library call; on the premise corpus also emotion
view sets for each p_e band layout of ``--layouts`` (``num_bands:num_permuted_bands``).
Then ``ncore-prep selectivity`` (its library call) on every view set, all clips, 2 views.
Writes ``OUT/selectivity.md`` (a table per view set, the verdicts, the sweep summary) and
``selectivity.json`` files beside the view sets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.manifest import LEGACY_F0_CEIL_HZ
from pipeline.workers import worker_pool

# The F0 search ceiling of the published tables (docs/results.md), measured before the
# default became 2000 Hz (docs/defaults.md): DIO, the study's tracker, unvoices F0 above a
# twelfth of the sample rate anyway, and the synthetic voices sit far below 800 Hz.
STUDY_F0_CEIL_HZ = LEGACY_F0_CEIL_HZ

DEFAULT_LAYOUTS = "40:20,40:10,20:10,10:5,80:40"


def prepare(out: Path, preset: str, clips: int, views: int, layouts: list[tuple[int, int]]):
    """The preset's corpus with its view sets; returns the manifest path."""
    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.perturb import EmotionParams
    from pipeline.prep import PerturbSettings, fixed_executor, process_executor, run_perturb

    path = out / "manifests" / f"{preset}.json"
    if not path.exists():
        manifest, _ = build_manifest(
            "synthetic",
            out / "data" / preset,
            preset,
            seed=42,
            manifest_path=path,
            clips=clips,
            entanglement=0.0,
            preset=preset,
        )
        save_manifest_keeping_views(manifest, path)
    runs = [
        PerturbSettings(
            kinds=("speaker", "emotion"), views=views, f0_method="dio", f0_ceil_hz=STUDY_F0_CEIL_HZ
        )
    ]
    for bands, permuted in layouts:
        if (bands, permuted) == (40, 20):
            continue  # the default layout is in the first view sets already
        params = EmotionParams(num_bands=bands, num_permuted_bands=permuted)
        runs.append(
            PerturbSettings(
                kinds=("emotion",),
                views=views,
                f0_method="dio",
                f0_ceil_hz=STUDY_F0_CEIL_HZ,
                emotion=params,
            )
        )
    with process_executor(2) as (pool, _):
        for settings in runs:
            run_perturb(path, settings, fixed_executor(pool), out / "cache", progress=False)
    return path


def layout_of(view_set) -> str:
    bands = view_set.params.get("num_bands", 40)
    permuted = view_set.params.get("num_permuted_bands", 20)
    return f"{bands}:{permuted}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ncore-selectivity"))
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--layouts", default=DEFAULT_LAYOUTS)
    parser.add_argument("--presets", default="premise,hard-case")
    args = parser.parse_args()

    from pipeline.manifest import Manifest
    from pipeline.selectivity import (
        SelectivitySettings,
        markdown_table,
        run_selectivity,
    )

    layouts = [tuple(int(v) for v in item.split(":")) for item in args.layouts.split(",")]
    lines = [
        f"Synthetic corpora of {args.clips} clips, speaker and emotion independent, "
        f"{args.views} views per clip (DIO); balanced accuracy % [95 % bootstrap interval].",
        "",
    ]
    sweep = []
    started = time.perf_counter()
    for preset in args.presets.split(","):
        t0 = time.perf_counter()
        path = prepare(
            args.out, preset, args.clips, args.views, layouts if preset == "premise" else []
        )
        t1 = time.perf_counter()
        settings = SelectivitySettings(max_clips=args.clips, views=args.views)
        results = run_selectivity(path, settings, lambda: worker_pool(2))
        t2 = time.perf_counter()
        lines.append(f"### {preset}: views {t1 - t0:.0f} s, selectivity {t2 - t1:.0f} s (wall)")
        manifest = Manifest.load(path)
        by_key = {vs.key: vs for vs in manifest.view_sets}
        for vs, result, _ in results:
            layout = f", bands {layout_of(vs)}" if vs.kind == "emotion" else ""
            lines += ["", f"**{preset}, {vs.kind} views (key {vs.key}{layout})**", ""]
            lines.append(markdown_table(result))
            lines += [f"- {v}" for v in result.verdicts]
            if preset == "premise" and vs.kind == "emotion":
                sweep.append((layout_of(by_key[vs.key]), result))
        lines.append("")
    if sweep:
        lines += [
            "### p_e band layout sweep (premise corpus)",
            "",
            "| bands : permuted | band width (Hz) | speaker, envelope: orig / views / transfer "
            "| speaker, all: orig / views / transfer | emotion, all: orig / views / transfer "
            "| removes emotion | keeps speaker |",
            "|---|---|---|---|---|---|---|",
        ]
        for layout, result in sorted(sweep, key=lambda s: tuple(int(v) for v in s[0].split(":"))):
            bands = int(layout.split(":")[0])

            def trio(label: str, features: str, result=result) -> str:
                return " / ".join(
                    f"{100 * result.row(label, features, c).balanced_accuracy:.1f}"
                    for c in ("originals", "views", "transfer")
                )

            word = {True: "yes", False: "no", None: "cannot tell"}
            lines.append(
                f"| {layout} | {(512 // bands) * 15.625:g} | {trio('speaker', 'envelope')} | "
                f"{trio('speaker', 'all')} | {trio('emotion', 'all')} | "
                f"{word[result.removes]} | {word[result.keeps]} |"
            )
    lines.append("")
    lines.append(f"total {time.perf_counter() - started:.0f} s wall")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selectivity.md").write_text(text, encoding="utf-8")
    (args.out / "selectivity-summary.json").write_text(
        json.dumps({"layouts": [s[0] for s in sweep]}, indent=1) + "\n", encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
