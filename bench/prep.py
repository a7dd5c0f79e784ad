"""Benchmark of ``ncore-prep perturb`` (reported in the README, never asserted in tests).

Reports, on a generated synthetic corpus:

- clips/s and seconds of audio per core-second for the speaker and the emotion view sets
  at N = 5 (one local worker each), and for both kinds from one analysis;
- the speed-up of 2 workers over 1 (both kinds);
- bytes on disk per second of audio, per view set;
- the per-clip WORLD time inside a Dask nanny worker with the nanny's default
  ``MALLOC_TRIM_THRESHOLD_=65536``, with the variable unset (what ``ncore-prep perturb``
  does for its local cluster), and with the default plus ``tune_malloc`` (what a task does
  on a cluster it did not start).

Usage: ``.venv/bin/python bench/prep.py [--clips 48] [--views 5] [--out bench/results/prep.json]``.
Numbers depend on the machine and on what else runs on it: the report records the CPU, the
core count and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average": os.getloadavg(),
    }


def make_corpus(root: Path, clips: int) -> Path:
    from pipeline.datasets import build_manifest

    path = root / "manifests" / "bench.json"
    manifest, _ = build_manifest(
        "synthetic", root / "data", "bench", manifest_path=path, clips=clips
    )
    manifest.save(path)
    return path


def fresh_manifest(source: Path, run_dir: Path) -> Path:
    """A copy of ``source`` in ``run_dir`` without view sets, pointing at the same audio."""
    from pipeline.manifest import Manifest

    manifest = Manifest.load(source)
    manifest = replace(manifest, data_dir=str(manifest.data_path(source)), view_sets=())
    path = run_dir / "manifests" / "bench.json"
    manifest.save(path)
    return path


def _warm(_: int) -> bool:
    import pipeline.prep  # noqa: F401 - imports pyworld, zarr, scipy once per worker

    return True


def run_stage(
    source: Path, root: Path, kinds: tuple[str, ...], views: int, workers: int, shard_size: int
) -> dict:
    from pipeline.inspection import folder_bytes
    from pipeline.prep import PerturbSettings, dask_executor, fixed_executor, run_perturb

    name = f"{'+'.join(kinds)}-w{workers}"
    run_dir = root / name
    path = fresh_manifest(source, run_dir)
    settings = PerturbSettings(kinds=kinds, views=views, shard_size=shard_size)
    with dask_executor(workers) as (executor, description):
        list(executor.map(_warm, range(4 * workers)))
        start = time.perf_counter()
        summary = run_perturb(
            path, settings, fixed_executor(executor, description), run_dir / "cache", progress=False
        )
        wall = time.perf_counter() - start
    assert not summary.errors, summary.errors
    on_disk = {}
    for vs in summary.view_sets:
        seconds = sum(s.samples for s in vs.shards) / 16000
        on_disk[vs.kind] = folder_bytes(vs.folder_path(path)) / seconds
    return {
        "run": name,
        "kinds": list(kinds),
        "views": views,
        "workers": workers,
        "clips": summary.clips_run,
        "audio_s": round(summary.audio_seconds, 2),
        "wall_s": round(wall, 2),
        "clips_per_s": round(summary.clips_run / wall, 3),
        "audio_s_per_core_s": round(summary.audio_seconds / (wall * workers), 3),
        "audio_s_per_busy_s": round(summary.audio_seconds / summary.busy_seconds, 3),
        "bytes_per_audio_s": {k: round(v) for k, v in on_disk.items()},
    }


def _world_time(paths: list[str], views: int, tune: bool) -> dict:
    """Per-clip time of one analysis + N views of each kind, measured inside the worker."""
    from pipeline.audio import load_audio
    from pipeline.memory import tune_malloc
    from pipeline.perturb import EmotionParams, SpeakerParams, analyse, perturb_clip

    tuned = tune_malloc() if tune else False
    kinds = {"speaker": (views, SpeakerParams()), "emotion": (views, EmotionParams())}
    clips = [load_audio(p)[0] for p in paths]
    perturb_clip(clips[0], "warm", 0, kinds)  # first call pays for lazy set-up
    times, analysis = [], []
    for i, audio in enumerate(clips):
        start = time.perf_counter()
        analyse(audio)
        analysis.append(time.perf_counter() - start)
        start = time.perf_counter()
        perturb_clip(audio, f"c{i}", 0, kinds)
        times.append(time.perf_counter() - start)
    return {
        "env": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "tuned": tuned,
        "per_clip_s": statistics.median(times),
        "analysis_s": statistics.median(analysis),
        "audio_s": sum(len(a) for a in clips) / 16000,
        "total_s": sum(times),
    }


def malloc_effect(source: Path, clips: int, views: int, rounds: int) -> list[dict]:
    """WORLD time per clip in a nanny worker under three malloc settings (rounds alternate)."""
    import dask
    from distributed import Client, LocalCluster

    from pipeline.manifest import Manifest

    manifest = Manifest.load(source)
    paths = [str(manifest.data_path(source) / c.path) for c in manifest.clips[:clips]]
    settings = [
        ("nanny default (65536)", 65536, False),
        ("unset (ncore-prep local cluster)", None, False),
        ("nanny default + tune_malloc in task", 65536, True),
    ]
    results: dict[str, list[dict]] = {label: [] for label, _, _ in settings}
    for _ in range(rounds):
        for label, value, tune in settings:
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # a nanny leaks it into this process
            key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
            with dask.config.set({key: value}):
                cluster = LocalCluster(
                    n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            with cluster, Client(cluster) as client:
                results[label].append(client.submit(_world_time, paths, views, tune).result())
    rows = []
    for label, runs in results.items():
        rows.append(
            {
                "setting": label,
                "worker_env": runs[0]["env"],
                "tuned": runs[0]["tuned"],
                "per_clip_s": round(statistics.median(r["per_clip_s"] for r in runs), 4),
                "analysis_s": round(statistics.median(r["analysis_s"] for r in runs), 4),
                "audio_s_per_s": round(
                    sum(r["audio_s"] for r in runs) / sum(r["total_s"] for r in runs), 3
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--malloc-clips", type=int, default=12)
    parser.add_argument("--malloc-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/prep.json"))
    parser.add_argument("--malloc-only", action="store_true", help="skip the stage runs")
    args = parser.parse_args()

    report: dict[str, object] = {"machine_before": machine()}
    with tempfile.TemporaryDirectory(prefix="ncore-bench-") as tmp:
        root = Path(tmp)
        source = make_corpus(root, args.clips)
        plan = (
            (("speaker",), 1),
            (("emotion",), 1),
            (("speaker", "emotion"), 1),
            (("speaker", "emotion"), 2),
        )
        runs = [
            run_stage(source, root, kinds, args.views, workers, args.shard_size)
            for kinds, workers in ([] if args.malloc_only else plan)
        ]
        report["runs"] = runs
        if runs:
            report["speedup_2_over_1"] = round(runs[2]["wall_s"] / runs[3]["wall_s"], 2)
        report["malloc"] = malloc_effect(source, args.malloc_clips, args.views, args.malloc_rounds)
    report["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    m = report["machine_before"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_average']}")
    print(f"corpus: {args.clips} synthetic clips, N = {args.views}, shard size {args.shard_size}")
    print("| run | workers | clips/s | audio s per core-s | audio s per busy s | bytes/audio s |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        size = ", ".join(f"{k} {v / 1024:.0f} KB" for k, v in r["bytes_per_audio_s"].items())
        print(
            f"| {'+'.join(r['kinds'])} | {r['workers']} | {r['clips_per_s']} | "
            f"{r['audio_s_per_core_s']} | {r['audio_s_per_busy_s']} | {size} |"
        )
    if runs:
        print(f"speed-up of 2 workers over 1 (both kinds): {report['speedup_2_over_1']}x")
    print(
        "| malloc setting | worker MALLOC_TRIM_THRESHOLD_ | WORLD analysis s/clip | "
        "analysis + 2N views s/clip | audio s/s |"
    )
    print("|---|---|---|---|---|")
    for r in report["malloc"]:
        print(
            f"| {r['setting']} | {r['worker_env']} | {r['analysis_s']} | {r['per_clip_s']} | "
            f"{r['audio_s_per_s']} |"
        )
    print(f"load average after: {report['machine_after']['load_average']}; wrote {args.out}")


if __name__ == "__main__":
    main()
