"""Benchmark of the perturbations: seconds of compute per second of audio (real-time factor).

    .venv/bin/python bench/perturb.py [--durations 1 4] [--views 5] [--repeats 3]

Reports, on the same synthetic voiced clips, the WORLD analysis (harvest and dio), one
p_s view (and its parts), the per-clip pitch flattening, one p_e view, and the total for
N views of both kinds from one shared analysis, against the naive approach that
re-analyses the clip for every view (what the reference implementation does for p_e).
Each number is the least CPU time (``time.process_time``, so other processes on a busy
machine inflate it less than wall-clock time) of ``--repeats`` runs; everything runs in
one thread. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import eq as eqlib
from pipeline import perturb
from pipeline.rng import make_rng
from pipeline.testing.signals import SAMPLE_RATE, voiced_clip

# pyworld as pipeline.perturb imports it (lazily, its pkg_resources warning silenced).
pyworld = perturb._world()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Least CPU time of ``repeats`` runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bench_clip(duration_s: float, views: int, repeats: int) -> dict[str, float]:
    """Seconds of compute per second of audio for each step on one clip."""
    clip = voiced_clip(duration_s, 120.0, 260.0)
    analysis = perturb.analyse(clip)
    flat = perturb.flatten_pitch(analysis)
    rng = make_rng(0, "speaker", "bench", 1)
    drawn = perturb.draw_speaker(rng)
    warped = perturb.warp_envelope(analysis.sp, drawn["formant_ratio"])
    f0 = perturb.shift_f0(analysis.f0, drawn["pitch_ratio"], drawn["pitch_range_ratio"])
    resynth = perturb._synthesize(analysis, f0, warped)
    sos = eqlib.eq_sos(drawn["eq"], SAMPLE_RATE)

    def speaker_views(an: perturb.WorldAnalysis, n: int) -> None:
        for i in range(1, n + 1):
            perturb.speaker_view(an, make_rng(0, "speaker", "bench", i))

    def emotion_views(signal: np.ndarray, n: int) -> None:
        for i in range(1, n + 1):
            perturb.emotion_view(signal, make_rng(0, "emotion", "bench", i))

    def shared_both() -> None:
        an = perturb.analyse(clip)
        speaker_views(an, views)
        emotion_views(perturb.flatten_pitch(an), views)

    def naive_speaker() -> None:
        for i in range(1, views + 1):
            perturb.speaker_view(perturb.analyse(clip), make_rng(0, "speaker", "bench", i))

    def naive_emotion() -> None:
        for i in range(1, views + 1):
            flat_i = perturb.flatten_pitch(perturb.analyse(clip))
            perturb.emotion_view(flat_i, make_rng(0, "emotion", "bench", i))

    x = clip / np.max(np.abs(clip))
    f0_h, times = pyworld.harvest(x, SAMPLE_RATE, frame_period=perturb.FRAME_PERIOD_MS)
    timings = {
        "analysis (harvest)": lambda: perturb.analyse(clip),
        "· F0 by harvest": lambda: pyworld.harvest(
            x, SAMPLE_RATE, frame_period=perturb.FRAME_PERIOD_MS
        ),
        "· envelope by CheapTrick": lambda: pyworld.cheaptrick(x, f0_h, times, SAMPLE_RATE),
        "· aperiodicity by D4C": lambda: pyworld.d4c(x, f0_h, times, SAMPLE_RATE),
        "analysis (dio+stonemask)": lambda: perturb.analyse(clip, f0_method="dio"),
        "p_s view": lambda: speaker_views(analysis, 1),
        "· formant warp": lambda: perturb.warp_envelope(analysis.sp, drawn["formant_ratio"]),
        "· WORLD synthesis": lambda: perturb._synthesize(analysis, f0, warped),
        "· random EQ": lambda: eqlib.apply_sos(sos, resynth),
        "pitch flattening (once per clip)": lambda: perturb.flatten_pitch(analysis),
        "p_e view": lambda: emotion_views(flat, 1),
        f"p_s x{views}, shared analysis": lambda: (
            perturb.analyse(clip),
            speaker_views(analysis, views),
        ),
        f"p_s x{views}, re-analysed per view": naive_speaker,
        f"p_e x{views}, shared analysis": lambda: emotion_views(
            perturb.flatten_pitch(perturb.analyse(clip)), views
        ),
        f"p_e x{views}, re-analysed per view": naive_emotion,
        f"both x{views}, shared analysis": shared_both,
        f"both x{views}, re-analysed per view": lambda: (naive_speaker(), naive_emotion()),
    }
    return {name: best_time(fn, repeats) / duration_s for name, fn in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    results = {d: bench_clip(d, args.views, args.repeats) for d in args.durations}
    names = list(next(iter(results.values())))
    print(f"# perturbation benchmark (perturb v{perturb.PERTURB_VERSION})")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"numpy {np.__version__}; one thread; least CPU time of {args.repeats} runs")
    print("CPU seconds per second of 16 kHz audio:\n")
    header = "| step | " + " | ".join(f"{d:g} s clip" for d in args.durations) + " |"
    print(header)
    print("|---|" + "---|" * len(args.durations))
    for name in names:
        cells = " | ".join(f"{results[d][name]:.4f}" for d in args.durations)
        print(f"| {name} | {cells} |")
    n = args.views
    print()
    for d, r in results.items():
        pe = r[f"p_e x{n}, re-analysed per view"] / r[f"p_e x{n}, shared analysis"]
        ps = r[f"p_s x{n}, re-analysed per view"] / r[f"p_s x{n}, shared analysis"]
        both = r[f"both x{n}, re-analysed per view"] / r[f"both x{n}, shared analysis"]
        share = r["analysis (harvest)"] / r[f"both x{n}, shared analysis"]
        print(
            f"{d:g} s clip: naive / shared = {pe:.1f}x for p_e, {ps:.1f}x for p_s, "
            f"{both:.1f}x for both kinds; the analysis is {100 * share:.0f} % of the shared "
            f"total"
        )


if __name__ == "__main__":
    main()
