"""F0 engines of the WORLD analysis compared on material with a known F0 (docs/perturbations.md).

Engines: ``harvest`` (the default), ``dio`` (DIO + StoneMask) and ``praat`` (Praat's
autocorrelation tracker through the optional GPL-3.0 package praat-parselmouth, its F0
handed to CheapTrick and D4C; skipped when the package is absent).

Two kinds of material, both with a known F0 contour and a known voicing:

- **synthetic**: clips built here as the corpus generator builds them (harmonics of a
  known F0 through formant resonators, some aspiration noise) with unvoiced noise bursts
  and pauses between two voiced stretches, so that voicing errors can be counted. Three F0
  bands: low (80-200 Hz), mid (200-450 Hz), high (450-1100 Hz, screams).
- **espeak** ("real-sounding"): short vocalisations and words spoken by espeak-ng (many
  voices, pitches and speeds), re-synthesised by WORLD with a known F0 imposed on the frames
  that both harvest and Praat call voiced on the original (neither engine owns the voicing
  truth); envelope, aperiodicity, timing and voicing pattern are espeak's. Skipped when
  espeak-ng is not installed.

Measures, per engine and F0 range (WORLD's 71-800 Hz default; 71-2000 Hz, the setting for
nonverbal vocalisations): gross pitch error (GPE: share of frames voiced in truth and
estimate where the estimate is more than 20 % off), voicing decision error (VDE: share of
frames whose voiced/unvoiced decision is wrong), frames within 20 ms of a voicing boundary
not scored; and the effect on the views, measured by a third estimator (DIO + StoneMask
over 60-2200 Hz) against the known F0: the median error of a p_s view's F0 ratio against
its drawn r2, and the F0 spread (std / mean) left by p_e's pitch flattening. Also the CPU
time of the analysis (F0 + CheapTrick + D4C) per second of audio.

Usage: ``.venv/bin/python studies/f0_quality.py [--clips 48]
[--out studies/results/f0_quality.json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.signal import sosfilt

from pipeline.audio import load_audio
from pipeline.perturb import (
    SpeakerParams,
    analyse,
    flatten_pitch,
    praat_available,
    speaker_view,
)
from pipeline.rng import make_rng

SR = 16_000
FRAME_S = 0.005
GUARD_S = 0.02  # frames this close to a voicing boundary are not scored
RANGES = {"71-800": (71.0, 800.0), "71-2000": (71.0, 2000.0)}
BANDS = {"low": (80.0, 200.0), "mid": (200.0, 450.0), "high": (450.0, 1100.0)}
NO_EQ = SpeakerParams(eq_gain_db=0.0)
# Seed 0 made the development clips on which the praat engine's two settings were chosen
# (pipeline/perturb.py, _praat_f0); the reported clips come from seed 1.
EVAL_SEED = 1

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pyworld


# ----------------------------------------------------------------------- material


def _resonators(formants: list[float]) -> np.ndarray:
    rows = []
    for freq, bw in zip(formants, (90.0, 110.0, 140.0, 180.0), strict=False):
        r = np.exp(-np.pi * bw / SR)
        a = np.array([1.0, -2 * r * np.cos(2 * np.pi * freq / SR), r * r])
        rows.append(np.concatenate([[a.sum(), 0.0, 0.0], a]))
    return np.stack(rows)


def synthetic_clip(index: int, band: str) -> tuple[np.ndarray, np.ndarray]:
    """(audio (T,), true F0 per sample, 0 where unvoiced) of one known-F0 clip."""
    rng = make_rng(EVAL_SEED, "f0-bench", band, index)
    lo, hi = BANDS[band]
    parts, truth = [], []

    def pause(seconds: float) -> None:
        n = round(seconds * SR)
        parts.append(np.zeros(n))
        truth.append(np.zeros(n))

    def voiced(seconds: float) -> None:
        n = round(seconds * SR)
        t = np.arange(n) / n
        base = np.exp(rng.uniform(np.log(lo), np.log(hi)))
        shape = rng.integers(4)
        depth = rng.uniform(0.1, 0.5)  # octaves
        if shape == 0:
            contour = 2.0 ** (depth * (t - 0.5))
        elif shape == 1:
            contour = 2.0 ** (depth * (0.5 - t))
        elif shape == 2:
            contour = 2.0 ** (depth * (np.sin(np.pi * t) - 0.5))
        else:
            contour = 2.0 ** (0.1 * depth * np.sin(2 * np.pi * 6.0 * np.arange(n) / SR))
        f0 = np.clip(base * contour, 60.0, 1150.0)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        source = np.zeros(n)
        tilt = rng.uniform(0.8, 1.4)
        for k in range(1, int(0.45 * SR / f0.max()) + 1):
            source += np.sin(k * phase) * k**-tilt
        source /= np.sqrt(np.mean(source**2))
        breath = rng.uniform(0.0, 0.3)
        excitation = (1 - breath) * source + breath * rng.standard_normal(n)
        scale = rng.uniform(0.85, 1.2)
        formants = [min(f * scale, 0.45 * SR) for f in (730.0, 1090.0, 2440.0, 3400.0)]
        voice = sosfilt(_resonators(formants), excitation)
        ramp = int(0.02 * SR)
        envelope = np.ones(n)
        envelope[:ramp] = np.linspace(0, 1, ramp)
        envelope[-ramp:] = np.linspace(1, 0, ramp)
        voice *= envelope / np.max(np.abs(voice)) * 10 ** (rng.uniform(-20, -3) / 20)
        parts.append(voice)
        truth.append(f0)

    def noise(seconds: float) -> None:
        n = round(seconds * SR)
        centre = rng.uniform(2500, 6000)
        burst = sosfilt(_resonators([centre]), rng.standard_normal(n))
        burst *= np.hanning(n) / np.max(np.abs(burst)) * 10 ** (rng.uniform(-30, -12) / 20)
        parts.append(burst)
        truth.append(np.zeros(n))

    pause(rng.uniform(0.05, 0.15))
    voiced(rng.uniform(0.3, 0.8))
    noise(rng.uniform(0.08, 0.2))
    pause(rng.uniform(0.05, 0.15))
    voiced(rng.uniform(0.3, 0.8))
    pause(rng.uniform(0.05, 0.15))
    audio = np.concatenate(parts)
    audio += 3e-4 * rng.standard_normal(audio.size)  # -70 dBFS noise floor
    return audio, np.concatenate(truth)


UTTERANCES = (
    "ha ha ha", "aaah", "oh no", "wow", "mm hmm", "ouch", "hey!", "ugh", "yay!", "oh!",
    "hmm?", "ahh ahh", "oooh", "eee!", "no no no", "whoa", "yes!", "uh oh", "ha!", "wheee",
)  # fmt: skip
VOICES = ("en", "en-us", "en+f2", "en+f4", "en+m3", "en-us+f3", "fr", "de", "es+f1", "it+m1")


def espeak_clips(root: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` espeak-ng renderings (voice, pitch 10-99 and speed varied), 16 kHz."""
    out = []
    for i in range(count):
        rng = make_rng(EVAL_SEED, "f0-bench-espeak", i)
        text = UTTERANCES[i % len(UTTERANCES)]
        voice = VOICES[int(rng.integers(len(VOICES)))]
        pitch, speed = int(rng.integers(10, 100)), int(rng.integers(110, 200))
        path = root / f"espeak-{i:03d}.wav"
        cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(path)]
        subprocess.run([*cmd, text], check=True, capture_output=True)
        audio, _, _ = load_audio(path)
        out.append((f"{voice} p{pitch} s{speed}: {text}", audio.astype(np.float64)))
    return out


def vocoded_known_f0(audio: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``audio`` re-synthesised with a known F0 on the frames both engines call voiced.

    Returns (audio, true F0 per sample) or None when too few frames are voiced by both.
    The imposed contour is smooth (a glide or an arch around a random level of 90-600 Hz).
    """
    x = audio / np.max(np.abs(audio))
    harvest = analyse(x, f0_method="harvest", f0_ceil_hz=2000.0).f0
    praat = analyse(x, f0_method="praat", f0_ceil_hz=2000.0).f0
    frames = min(harvest.size, praat.size)
    voiced = (harvest[:frames] > 0) & (praat[:frames] > 0)
    if voiced.sum() < 40:
        return None
    rng = make_rng(EVAL_SEED, "f0-bench-vocoded", index)
    t = np.linspace(0.0, 1.0, frames)
    base = np.exp(rng.uniform(np.log(90.0), np.log(600.0)))
    depth = rng.uniform(0.1, 0.6)
    contour = 2.0 ** (depth * (t - 0.5) if rng.random() < 0.5 else depth * np.sin(np.pi * t))
    f0 = np.where(voiced, base * contour, 0.0)
    times = np.arange(frames) * FRAME_S
    sp = pyworld.cheaptrick(x, f0, times, SR, f0_floor=71.0)
    ap = pyworld.d4c(x, f0, times, SR)
    y = pyworld.synthesize(f0, sp, ap, SR, FRAME_S * 1000)[: x.size]
    y = 0.5 * y / np.max(np.abs(y))
    per_sample = np.repeat(f0, round(FRAME_S * SR))[: y.size]
    per_sample = np.pad(per_sample, (0, y.size - per_sample.size))
    return y, per_sample


# ----------------------------------------------------------------------- measures


def frame_truth(truth: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """True F0 at WORLD's frame times and a mask of the frames to score."""
    idx = np.minimum((np.arange(frames) * FRAME_S * SR).astype(int), truth.size - 1)
    f0 = truth[idx]
    voiced = truth > 0
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8))) + 1
    scored = np.ones(frames, dtype=bool)
    guard = GUARD_S * SR
    for e in edges:
        scored &= np.abs(idx - e) > guard
    return f0, scored


def pitch_errors(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    f0, scored = frame_truth(truth, estimate.size)
    est_v, true_v = estimate > 0, f0 > 0
    both = scored & est_v & true_v
    gross = np.abs(estimate[both] / f0[both] - 1.0) > 0.2
    return {
        "frames": int(scored.sum()),
        "voiced_frames": int((scored & true_v).sum()),
        "both_voiced": int(both.sum()),
        "gross": int(gross.sum()),
        "vde": int((scored & (est_v != true_v)).sum()),
    }


def measure_f0(audio: np.ndarray) -> np.ndarray:
    """The third estimator used to measure views: DIO + StoneMask over 60-2200 Hz."""
    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pyworld.dio(x, SR, f0_floor=60.0, f0_ceil=2200.0, frame_period=FRAME_S * 1000)
    return pyworld.stonemask(x, f0, t, SR)


def view_effects(analysis, truth: np.ndarray, clip_id: str, views: int) -> dict[str, list]:
    """p_s: |measured view F0 / true F0 / r2 - 1| (median over frames) per view;
    p_e: std / mean of the measured F0 of the flattened clip."""
    f0_true, scored = frame_truth(truth, analysis.f0.size)
    ratios = []
    for i in range(1, views + 1):
        view, drawn = speaker_view(analysis, make_rng(1, "speaker", clip_id, i), NO_EQ)
        measured = measure_f0(view)[: f0_true.size]
        ok = scored[: measured.size] & (f0_true[: measured.size] > 0) & (measured > 0)
        if ok.sum() < 10 or drawn["pitch_ratio"] * f0_true[ok].max() > 1900:
            continue  # p_s clips shifted F0 at 2 kHz: no ratio to check
        ratio = np.median(measured[ok] / f0_true[: measured.size][ok])
        ratios.append(abs(ratio / drawn["pitch_ratio"] - 1.0))
    flat = measure_f0(flatten_pitch(analysis))[: f0_true.size]
    ok = scored[: flat.size] & (f0_true[: flat.size] > 0) & (flat > 0)
    spread = [float(flat[ok].std() / flat[ok].mean())] if ok.sum() >= 10 else []
    return {"ratio_error": ratios, "flat_spread": spread}


def run_engine(engine: str, f0_range: tuple[float, float], clips, views: int) -> dict:
    totals = {"frames": 0, "voiced_frames": 0, "both_voiced": 0, "gross": 0, "vde": 0}
    effects: dict[str, list] = {"ratio_error": [], "flat_spread": []}
    cpu = audio_s = 0.0
    for clip_id, audio, truth in clips:
        start = time.process_time()
        analysis = analyse(audio, f0_method=engine, f0_floor_hz=f0_range[0], f0_ceil_hz=f0_range[1])
        cpu += time.process_time() - start
        audio_s += audio.size / SR
        for k, v in pitch_errors(analysis.f0, truth).items():
            totals[k] += v
        if views:
            for k, v in view_effects(analysis, truth, clip_id, views).items():
                effects[k].extend(v)
    ratio = np.asarray(effects["ratio_error"])
    return {
        "gpe_pct": round(100 * totals["gross"] / max(totals["both_voiced"], 1), 2),
        "vde_pct": round(100 * totals["vde"] / max(totals["frames"], 1), 2),
        "voiced_recall_pct": round(
            100 * totals["both_voiced"] / max(totals["voiced_frames"], 1), 1
        ),
        "ps_ratio_error_median_pct": round(100 * float(np.median(ratio)), 2)
        if ratio.size
        else None,
        "ps_views_within_5pct": round(100 * float(np.mean(ratio < 0.05)), 1)
        if ratio.size
        else None,
        "ps_views": int(ratio.size),
        "pe_flat_spread_median_pct": round(100 * float(np.median(effects["flat_spread"])), 2)
        if effects["flat_spread"]
        else None,
        "analysis_cpu_s_per_audio_s": round(cpu / audio_s, 4),
        "frames": totals["frames"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="synthetic clips per F0 band")
    parser.add_argument("--espeak", type=int, default=40, help="espeak-ng clips")
    parser.add_argument("--views", type=int, default=2, help="p_s views per clip measured")
    parser.add_argument("--out", type=Path, default=Path("studies/results/f0_quality.json"))
    args = parser.parse_args()

    engines = ["harvest", "dio"] + (["praat"] if praat_available() else [])
    material: dict[str, list] = {}
    for band in BANDS:
        material[f"synthetic {band}"] = [
            (f"{band}{i}", *synthetic_clip(i, band)) for i in range(args.clips)
        ]
    if shutil.which("espeak-ng") and praat_available():
        with tempfile.TemporaryDirectory() as tmp:
            rendered = espeak_clips(Path(tmp), args.espeak)
        vocoded = []
        for i, (_name, audio) in enumerate(rendered):
            made = vocoded_known_f0(audio, i)
            if made is not None:
                vocoded.append((f"espeak{i}", *made))
        material["espeak vocoded"] = vocoded
    else:
        print("espeak-ng or praat-parselmouth missing: no espeak material")

    report: dict[str, object] = {"engines": engines, "rows": []}
    print(
        "| material | F0 range | engine | GPE % | VDE % | voiced found % | p_s ratio error "
        "(median %) | p_s views within 5 % | p_e spread after flattening % | "
        "analysis CPU-s per audio s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, clips in material.items():
        for range_name, f0_range in RANGES.items():
            if name == "synthetic high" and range_name == "71-800":
                pass  # kept: shows what the default range does to screams
            for engine in engines:
                row = run_engine(engine, f0_range, clips, args.views)
                row.update(material=name, f0_range=range_name, engine=engine, clips=len(clips))
                report["rows"].append(row)  # type: ignore[union-attr]
                print(
                    f"| {name} ({len(clips)}) | {range_name} | {engine} | {row['gpe_pct']} | "
                    f"{row['vde_pct']} | {row['voiced_recall_pct']} | "
                    f"{row['ps_ratio_error_median_pct']} | {row['ps_views_within_5pct']} | "
                    f"{row['pe_flat_spread_median_pct']} | {row['analysis_cpu_s_per_audio_s']} |",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
