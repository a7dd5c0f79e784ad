"""What ``ncore-prep perturb`` costs a user, end to end (reported in README, never asserted).

On two corpora, each in one run of this script:

- **synthetic**: the toolkit's synthetic corpus (``--clips`` clips);
- **espeak**: short recorded-like clips, espeak-ng renderings of nonverbal vocalisations
  and exclamations (many voices, pitches and speeds; 22.05 kHz WAV files, so decoding
  resamples them), imported as a csv corpus. Skipped when espeak-ng is not installed.

For each corpus it measures:

1. the whole command ``ncore-prep perturb --kind both --views N`` as a subprocess, 1 worker,
   for each F0 engine (harvest; praat when praat-parselmouth is installed): CPU time of the
   whole process tree (this process makes itself a child subreaper, so every worker and
   server process is reaped and counted) and wall time;
2. the same command again, which finds nothing to do (the fixed cost of a no-op);
3. the command with 2 workers against 1 (wall-time speed-up, harvest);
4. a breakdown by stage, in this process on the same clips (CPU time): decode and
   resample, WORLD analysis (F0, then CheapTrick + D4C), the N p_s views, the pitch
   flattening and the N p_e views, and writing the shards; what the whole command costs
   beyond their sum is start-up, imports, planning and the manifest;
5. the reference way of making the same views on the same clips, in this process: for each
   p_e view a new WORLD analysis (harvest) of the clip, flattening and band permutation;
   for each p_s view Praat's "Change gender" (with the same drawn ratios) and the same
   random EQ, as NANSY's reference code does (needs praat-parselmouth). It is timed
   without imports, decoding or writing, so the ratio is if anything flattering to it.

Usage: ``.venv/bin/python bench/prep.py [--clips 48] [--espeak 60] [--views 5]
[--out bench/results/prep.json]``; ``--malloc`` adds the older measurement of glibc's
malloc thresholds inside Dask workers. Numbers depend on the machine and what else runs on
it: the report records the CPU, the core count and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.atomic import write_json
from pipeline.manifest import SAMPLE_RATE


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
        "audio_s": sum(len(a) for a in clips) / SAMPLE_RATE,
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


def espeak_corpus(root: Path, count: int) -> Path | None:
    """``count`` espeak-ng clips under ``root/data`` as a csv corpus; its manifest path."""
    import csv
    import shutil
    import subprocess

    from pipeline.datasets import build_manifest

    if not shutil.which("espeak-ng"):
        return None
    words = (
        "ha ha ha", "aaah", "oh no", "wow", "mm hmm", "ouch", "hey!", "ugh", "yay!", "oh!",
        "hmm?", "ahh ahh", "oooh", "eee!", "no no no", "whoa", "yes!", "uh oh", "ha!", "wheee",
        "nooo!", "mmm", "eh?", "oh my", "haha", "ow ow", "yeah!", "huh", "aah!", "oops",
    )  # fmt: skip
    voices = ("en", "en-us", "en+f2", "en+f4", "en+m3", "en-us+f3", "fr", "de", "es+f1", "it")
    data = root / "espeak-data"
    (data / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        voice = voices[i % len(voices)]
        pitch, speed = 10 + (37 * i) % 90, 110 + (23 * i) % 90
        rel = f"wav/e{i:03d}.wav"
        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed)]
        subprocess.run([*cmd, "-w", str(data / rel), words[i % len(words)]], check=True)
        rows.append((rel, f"w{i % len(words)}", voice))
    with open(data / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "emotion", "speaker"), *rows])
    path = root / "manifests" / "espeak.json"
    manifest, _ = build_manifest("csv", data, "espeak", seed=0, manifest_path=path)
    manifest.save(path)
    return path


def make_child_subreaper() -> None:
    """Become the reaper of every orphaned descendant, so that their CPU time is counted."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL("libc.so.6").prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def timed_command(args: list[str], cwd: Path) -> dict[str, float]:
    """Run ``args``; wall seconds and CPU seconds of its whole process tree."""
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    while True:  # reap what the command left behind (servers, workers) to count them
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stdout": done.stdout}


def perturb_command(
    source: Path, root: Path, name: str, views: int, workers: int, f0: str, shard_size: int
) -> dict:
    """``ncore-prep perturb`` on a copy of ``source`` (no view sets): first run, then no-op."""
    import sys

    run_dir = root / name
    path = fresh_manifest(source, run_dir)
    exe = Path(sys.executable).with_name("ncore-prep")
    args = [str(exe), "perturb", "--dataset", path.stem, "--views", str(views), "--kind", "both"]
    args += ["--workers", str(workers), "--f0", f0, "--shard-size", str(shard_size)]
    args += ["--manifest-dir", str(path.parent), "--cache-dir", str(run_dir / "cache")]
    args += ["--no-progress"]
    first = timed_command(args, run_dir)
    noop = timed_command(args, run_dir)
    assert "nothing to do" in noop["stdout"], noop["stdout"]
    return {
        "run": name,
        "workers": workers,
        "f0": f0,
        "wall_s": first["wall_s"],
        "cpu_s": first["cpu_s"],
        "noop_wall_s": noop["wall_s"],
        "noop_cpu_s": noop["cpu_s"],
        "summary": first["stdout"].splitlines()[:2],
    }


def clip_audio(source: Path) -> tuple[list[str], float]:
    from pipeline.manifest import Manifest

    manifest = Manifest.load(source)
    paths = [str(manifest.data_path(source) / c.path) for c in manifest.clips]
    return paths, sum(c.num_samples for c in manifest.clips) / 16000


def breakdown(
    paths: list[str], views: int, f0: str, root: Path, shard_size: int
) -> dict[str, float]:
    """CPU seconds per stage of compute_shard's work on these clips (in this process)."""
    from pipeline.audio import load_audio
    from pipeline.perturb import (
        EmotionParams,
        SpeakerParams,
        _world,
        analyse,
        emotion_view,
        flatten_pitch,
        speaker_view,
    )
    from pipeline.rng import make_rng
    from pipeline.shards import ShardClip, write_shard

    stages = dict.fromkeys(
        ("decode + resample", "analysis: F0 + CheapTrick + D4C", "p_s views (N)",
         "p_e: flattening", "p_e views (N)", "writing shards"), 0.0,
    )  # fmt: skip
    speaker, emotion = SpeakerParams(), EmotionParams()
    _world()
    clock = time.process_time
    for start in range(0, len(paths), shard_size):
        stored: dict[str, list] = {"speaker": [], "emotion": []}
        for i in range(start, min(start + shard_size, len(paths))):
            t = clock()
            audio, _, _ = load_audio(paths[i])
            stages["decode + resample"] += clock() - t
            t = clock()
            an = analyse(audio, f0_method=f0)
            stages["analysis: F0 + CheapTrick + D4C"] += clock() - t
            t = clock()
            ps = [
                speaker_view(an, make_rng(0, "speaker", str(i), v), speaker) for v in range(views)
            ]
            stages["p_s views (N)"] += clock() - t
            t = clock()
            flat = flatten_pitch(an)
            stages["p_e: flattening"] += clock() - t
            t = clock()
            rngs = [make_rng(0, "emotion", str(i), v) for v in range(views)]
            pe = [emotion_view(flat, rng, emotion) for rng in rngs]
            stages["p_e views (N)"] += clock() - t
            for kind, made in (("speaker", ps), ("emotion", pe)):
                rows = np.stack([audio, *(v for v, _ in made)])
                stored[kind].append(ShardClip(str(i), rows, [d for _, d in made]))
        t = clock()
        for kind, clips in stored.items():
            write_shard(root / f"{kind}-{start}.zarr", clips, {"kind": kind})
        stages["writing shards"] += clock() - t
    return {k: round(v, 2) for k, v in stages.items()}


def reference_way(paths: list[str], views: int) -> dict[str, float] | None:
    """CPU seconds of the reference way of making N views of each kind (in this process)."""
    from pipeline.perturb import praat_available

    if not praat_available():
        return None
    import parselmouth
    from parselmouth.praat import call

    from pipeline import eq as eqlib
    from pipeline.audio import load_audio
    from pipeline.perturb import (
        EmotionParams,
        SpeakerParams,
        analyse,
        draw_speaker,
        emotion_view,
        flatten_pitch,
    )
    from pipeline.rng import make_rng

    speaker, emotion = SpeakerParams(), EmotionParams()
    clips = [load_audio(p)[0].astype(np.float64) for p in paths]
    clock = time.process_time
    ps = pe = 0.0
    failed = 0
    for i, audio in enumerate(clips):
        t = clock()
        for v in range(views):  # p_e: a new WORLD analysis for every view
            flat = flatten_pitch(analyse(audio))
            emotion_view(flat, make_rng(0, "emotion", str(i), v), emotion)
        pe += clock() - t
        t = clock()
        sound = parselmouth.Sound(audio, sampling_frequency=16000.0)
        for v in range(views):  # p_s: Praat's "Change gender" per view, then the EQ
            drawn = draw_speaker(make_rng(0, "speaker", str(i), v), speaker)
            pitch = call(sound, "To Pitch", 0.0, 75.0, 600.0)
            median = call(pitch, "Get quantile", 0.0, 0.0, 0.5, "Hertz")
            median = median if np.isfinite(median) else 0.0
            try:
                changed = call(
                    sound, "Change gender", 75.0, 600.0, drawn["formant_ratio"],
                    median * drawn["pitch_ratio"], drawn["pitch_range_ratio"], 1.0,
                )  # fmt: skip
                y = changed.values[0]
            except parselmouth.PraatError:  # Praat refuses some clips (no pitch found)
                failed += 1
                y = audio
            eqlib.apply_sos(eqlib.eq_sos(drawn["eq"], 16000), y)
        ps += clock() - t
    return {"p_e (WORLD re-analysis per view)": round(pe, 2),
            "p_s (Praat Change gender per view)": round(ps, 2),
            "total": round(pe + ps, 2),
            "p_s views Praat refused": failed}  # fmt: skip


def bench_corpus(name: str, source: Path, root: Path, args: argparse.Namespace) -> dict:
    from pipeline.perturb import praat_available

    paths, audio_s = clip_audio(source)
    engines = ["harvest"] + (["praat"] if praat_available() else [])
    out: dict[str, object] = {"corpus": name, "clips": len(paths), "audio_s": round(audio_s, 1)}
    commands = [
        perturb_command(source, root, f"{name}-{f0}-w1", args.views, 1, f0, args.shard_size)
        for f0 in engines
    ]
    commands.append(
        perturb_command(
            source, root, f"{name}-harvest-w2", args.views, 2, "harvest", args.shard_size
        )
    )
    out["commands"] = commands
    out["speedup_2_over_1"] = round(commands[0]["wall_s"] / commands[-1]["wall_s"], 2)
    out["breakdown"] = {
        f0: breakdown(paths, args.views, f0, root / f"{name}-{f0}-stages", args.shard_size)
        for f0 in engines
    }
    reference = reference_way(paths, args.views)
    out["reference"] = reference
    if reference:
        out["ratio"] = {c["f0"]: round(c["cpu_s"] / reference["total"], 3) for c in commands[:-1]}
    partial = root.parent / f"ncore-bench-prep-{name}.json"  # kept if a later step fails
    write_json(partial, out)
    return out


def print_corpus(r: dict) -> None:
    print(f"\n### {r['corpus']}: {r['clips']} clips, {r['audio_s']} s of audio")
    print("| command | workers | F0 | CPU-s (process tree) | wall s | CPU-s per audio s | "
          "no-op CPU-s | no-op wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for c in r["commands"]:
        print(
            f"| ncore-prep perturb | {c['workers']} | {c['f0']} | {c['cpu_s']} | {c['wall_s']} | "
            f"{c['cpu_s'] / r['audio_s']:.3f} | {c['noop_cpu_s']} | {c['noop_wall_s']} |"
        )
    print(f"speed-up of 2 workers over 1 (wall, harvest): {r['speedup_2_over_1']}x")
    for f0, stages in r["breakdown"].items():
        command = next(c for c in r["commands"] if c["f0"] == f0 and c["workers"] == 1)
        rest = command["cpu_s"] - sum(stages.values())
        parts = ", ".join(f"{k} {v}" for k, v in stages.items())
        print(f"breakdown ({f0}, CPU-s): {parts}; start-up, imports, planning, manifest {rest:.2f}")
    if r["reference"]:
        ref = r["reference"]
        parts = ", ".join(f"{k} {v}" for k, v in ref.items())
        print(f"reference way (CPU-s): {parts}")
        print(f"whole command / reference way: {r['ratio']}")
    else:
        print("reference way: praat-parselmouth is not installed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=48, help="synthetic clips")
    parser.add_argument("--espeak", type=int, default=60, help="espeak-ng clips (0: none)")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--malloc", action="store_true", help="also the malloc measurement")
    parser.add_argument("--malloc-clips", type=int, default=12)
    parser.add_argument("--malloc-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/prep.json"))
    args = parser.parse_args()

    make_child_subreaper()
    report: dict[str, object] = {"machine_before": machine(), "corpora": []}
    with tempfile.TemporaryDirectory(prefix="ncore-bench-") as tmp:
        root = Path(tmp)
        corpora = [("synthetic", make_corpus(root, args.clips))]
        espeak = espeak_corpus(root, args.espeak) if args.espeak else None
        if espeak is not None:
            corpora.append(("espeak", espeak))
        elif args.espeak:
            print("espeak-ng is not installed: no espeak corpus")
        for name, source in corpora:
            result = bench_corpus(name, source, root, args)
            report["corpora"].append(result)  # type: ignore[union-attr]
            print_corpus(result)
        if args.malloc:
            report["malloc"] = malloc_effect(
                corpora[0][1], args.malloc_clips, args.views, args.malloc_rounds
            )
            for row in report["malloc"]:  # type: ignore[union-attr]
                print(row)
    report["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)

    m = report["machine_before"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, load {m['load_average']} before, "
          f"{report['machine_after']['load_average']} after; wrote {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
