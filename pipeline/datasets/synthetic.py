"""A synthetic corpus of NVV-like clips with known speaker and emotion factors.

Source-filter synthesis at 16 kHz. Where each factor lives is a choice, made on purpose by
a **preset** (``SyntheticConfig.preset``):

- ``premise`` (the default, and the corpus of ``make demo``): the placement under which
  N-CORE's premise holds. Speakers differ only in cues the speaker perturbation p_s
  randomises: base F0, a vocal-tract scaling of the formant frequencies and the source's
  spectral tilt. Emotions differ only in cues p_s keeps: the F0 contour's shape (rise,
  fall, rise-fall, vibrato; its level is the speaker's, its excursion about half an
  octave for every emotion), the voicing pattern and rhythm of bursts (1 to 4 voiced
  bursts per clip), roughness (jitter and shimmer), breathiness (aspiration noise share)
  and duration. Every clip peaks at the same level (+-2 dB).
- ``hard-case``: the placement of generator version 1, kept as a documented hard case for
  the method. Emotions *also* move the cues p_s randomises: the F0 level (x0.85 to 1.6),
  all formants (x0.90 to 1.10), the spectral tilt and the peak level (-14 to -2 dBFS),
  beside the contour, duration and breathiness. Invariance to p_s then removes part of
  the emotion cue along with the speaker cue.

Speakers are the same in both presets and across generator seeds (a speaker's traits
depend only on the number of speakers and its index): base F0 spread over 1.6 octaves
from 110 Hz, formant scale over 0.82 to 1.18 and tilt over 0.9 to 1.3, each axis a
different permutation of the speakers, so every speaker has its own value on every axis.

**entanglement** in [0, 1] biases the joint distribution of speaker and emotion the way
ReCANVo is biased: with 0, every emotion is spread evenly over the speakers; with 1, each
emotion comes from its "home" speaker only. In between, P(speaker | emotion) =
(1 - e) / S + e * [speaker is home(emotion)].

The generator writes real 16-bit WAV files under ``<out>/wav/`` and a ``labels.csv`` with
columns ``path,emotion,speaker``; the corpus is then imported by the same CSV importer as
any other corpus. Every draw comes from :func:`pipeline.rng.make_rng` seeded from the
generator seed and the clip id, so the same settings give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.signal import sosfilt

from pipeline.atomic import write_text
from pipeline.audio import write_wav
from pipeline.datasets.base import DatasetError, DatasetSpec, Listing
from pipeline.manifest import SAMPLE_RATE
from pipeline.rng import make_rng

# 2: the vocal-tract order is a permutation for any number of speakers (version 1 gave
# 6 speakers only 3 formant scales), speakers do not depend on the generator seed, presets.
GENERATOR_VERSION = 2
PRESETS = ("premise", "hard-case")
DEFAULT_PRESET = "premise"
EMOTIONS = ("achievement", "anger", "fear", "pleasure", "surprise", "pain")
# Formants of an open vowel for an average adult tract (Hz) and their bandwidths (Hz).
BASE_FORMANTS = (730.0, 1090.0, 2440.0, 3400.0)
BANDWIDTHS = (90.0, 110.0, 140.0, 180.0)
# Peak level (dBFS) of every clip of the premise preset; level carries no emotion there.
PREMISE_LEVEL_DB = -6.0
# Spectral tilt of the premise preset's source: the speaker's exponent plus this constant
# (the hard case adds 0.04 * -level_db, so louder emotions get flatter spectra).
PREMISE_TILT_OFFSET = 0.3


@dataclass(frozen=True)
class EmotionStyle:
    """How an emotion shapes a clip.

    ``f0_scale`` multiplies the speaker's F0; ``contour`` names the F0 shape over the clip
    and ``depth`` its excursion in octaves; ``level_db`` is the peak level (dBFS);
    ``duration`` the mean length in seconds; ``breathiness`` the noise share in [0, 1];
    ``formant_shift`` a change of all formants (ratio) for articulation; ``bursts`` the
    number of voiced bursts (separated by pauses at the noise floor); ``jitter`` and
    ``shimmer`` the standard deviation of the F0 and amplitude perturbation, as a
    fraction, drawn every 5 ms (roughness).
    """

    f0_scale: float
    contour: str
    depth: float
    level_db: float
    duration: float
    breathiness: float
    formant_shift: float
    bursts: int = 1
    jitter: float = 0.0
    shimmer: float = 0.0


# The hard case (generator version 1's placement): emotion on F0 level, formants, tilt and
# level too, all of which p_s randomises or input normalisation removes.
HARD_CASE_STYLES: dict[str, EmotionStyle] = {
    "achievement": EmotionStyle(1.30, "rise", 0.8, -4.0, 0.9, 0.10, 1.05),
    "anger": EmotionStyle(1.10, "fall", 0.5, -2.0, 0.8, 0.25, 0.95),
    "fear": EmotionStyle(1.60, "flat", 0.1, -10.0, 1.2, 0.45, 1.10),
    "pleasure": EmotionStyle(0.85, "rise-fall", 0.4, -14.0, 1.3, 0.55, 0.90),
    "surprise": EmotionStyle(1.45, "rise-fall", 1.0, -6.0, 0.7, 0.15, 1.00),
    "pain": EmotionStyle(1.20, "fall", 0.9, -5.0, 1.1, 0.35, 0.92),
}
# The premise preset: F0 level, formants, tilt and level identical for every emotion
# (f0_scale 1 with the contour's median at the speaker's F0, formant_shift 1, one level);
# emotion only in contour shape, bursts, roughness, breathiness and duration. Contour
# excursions are all about half an octave so that the F0 range says little either.
PREMISE_STYLES: dict[str, EmotionStyle] = {
    "achievement": EmotionStyle(1.0, "rise", 0.5, PREMISE_LEVEL_DB, 0.9, 0.10, 1.0, 1, 0.005, 0.02),
    "anger": EmotionStyle(1.0, "fall", 0.5, PREMISE_LEVEL_DB, 0.8, 0.15, 1.0, 2, 0.04, 0.15),
    "fear": EmotionStyle(1.0, "flat", 0.25, PREMISE_LEVEL_DB, 1.2, 0.40, 1.0, 1, 0.01, 0.05),
    "pleasure": EmotionStyle(
        1.0, "rise-fall", 0.5, PREMISE_LEVEL_DB, 1.3, 0.30, 1.0, 4, 0.01, 0.05
    ),
    "surprise": EmotionStyle(
        1.0, "fall-rise", 0.5, PREMISE_LEVEL_DB, 0.7, 0.05, 1.0, 1, 0.005, 0.02
    ),
    "pain": EmotionStyle(1.0, "fall", 0.5, PREMISE_LEVEL_DB, 1.1, 0.35, 1.0, 3, 0.03, 0.10),
}
STYLES = {"premise": PREMISE_STYLES, "hard-case": HARD_CASE_STYLES}


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of a synthetic corpus; ``clips`` is the total number of clips."""

    speakers: int = 6
    emotions: int = 4
    clips: int = 240
    entanglement: float = 0.5
    min_duration: float = 0.6
    max_duration: float = 1.5
    seed: int = 0
    preset: str = DEFAULT_PRESET

    def __post_init__(self) -> None:
        if not 2 <= self.emotions <= len(EMOTIONS):
            raise ValueError(f"synthetic: emotions must be in 2..{len(EMOTIONS)}")
        if not 2 <= self.speakers <= 99:
            raise ValueError("synthetic: speakers must be in 2..99")
        if not 0.0 <= self.entanglement <= 1.0:
            raise ValueError("synthetic: entanglement must be in [0, 1]")
        if self.clips < self.emotions * 2:
            raise ValueError(f"synthetic: need at least {self.emotions * 2} clips")
        if not 0.2 <= self.min_duration <= self.max_duration:
            raise ValueError("synthetic: need 0.2 <= min_duration <= max_duration (seconds)")
        if self.preset not in PRESETS:
            raise ValueError(f"synthetic: preset must be one of {', '.join(PRESETS)}")

    def to_dict(self) -> dict[str, object]:
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


@dataclass(frozen=True)
class SpeakerTraits:
    """Base F0 (Hz), formant scale (ratio) and source spectral tilt (exponent)."""

    f0: float
    formant_scale: float
    tilt: float


def speaker_name(index: int) -> str:
    return f"spk{index + 1:02d}"


def speaker_axis_order(speakers: int, axis: str) -> np.ndarray:
    """The rank (0..speakers-1) of each speaker on one trait axis: a permutation.

    ``"f0"`` is the identity; ``"formant"`` and ``"tilt"`` are fixed pseudo-random
    permutations (seeded from the axis and the number of speakers, not from the corpus
    seed, so a speaker is the same in every corpus), redrawn while they equal the F0
    order or each other, so that no two axes rank the speakers alike when there are 3 or
    more of them.
    """
    if axis == "f0":
        return np.arange(speakers)
    forbidden = [np.arange(speakers)]
    order = np.arange(speakers)
    for name in ("formant", "tilt"):
        rng = make_rng("synthetic-speaker-order", name, speakers)
        for _ in range(1000):
            order = rng.permutation(speakers)
            if speakers < 3 or not any(np.array_equal(order, f) for f in forbidden):
                break
        if name == axis:
            return order
        forbidden.append(order)
    raise ValueError(f"unknown speaker axis {axis!r}")


def speaker_traits(config: SyntheticConfig, index: int) -> SpeakerTraits:
    """Well separated speakers: F0 over 1.6 octaves, formant scale over +-18 %, tilt 0.9-1.3.

    Each axis ranks the speakers in its own order (:func:`speaker_axis_order`), so every
    speaker has a distinct value on every axis and no axis follows another; a small jitter
    (seeded from the speaker, not the corpus seed) keeps the values off a grid.
    """
    n = config.speakers
    span = max(n - 1, 1)
    rng = make_rng("synthetic-speaker", n, index)
    f0_rank = speaker_axis_order(n, "f0")[index]
    formant_rank = speaker_axis_order(n, "formant")[index]
    tilt_rank = speaker_axis_order(n, "tilt")[index]
    # Jitter well below half a grid step, so the ranks (and the distinctness) survive it.
    return SpeakerTraits(
        f0=110.0 * 2.0 ** (1.6 * f0_rank / span) * rng.uniform(0.99, 1.01),
        formant_scale=(0.82 + 0.36 * formant_rank / span) * rng.uniform(0.995, 1.005),
        tilt=0.9 + 0.4 * tilt_rank / span + rng.uniform(-0.01, 0.01),
    )


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` proportional to ``weights`` (largest remainder).

    Ties are broken by position, so the result depends on nothing but its arguments.
    """
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return counts


def plan(config: SyntheticConfig) -> list[tuple[str, str, str]]:
    """The clips of the corpus as ``(clip_id, speaker, emotion)``, in a fixed order."""
    emotions = EMOTIONS[: config.emotions]
    per_emotion = allocate(config.clips, np.ones(config.emotions))
    out = []
    for e, emotion in enumerate(emotions):
        home = e % config.speakers
        weights = np.full(config.speakers, (1.0 - config.entanglement) / config.speakers)
        weights[home] += config.entanglement
        for s, count in enumerate(allocate(int(per_emotion[e]), weights)):
            for k in range(int(count)):
                speaker = speaker_name(s)
                out.append((f"{speaker}_{emotion}_{k + 1:03d}", speaker, emotion))
    return out


def _contour(kind: str, depth: float, t: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """F0 multiplier over normalised time ``t`` in [0, 1] (shape (T,))."""
    if kind == "rise":
        return 2.0 ** (depth * (t - 0.3))
    if kind == "fall":
        return 2.0 ** (depth * (0.3 - t))
    if kind == "rise-fall":
        return 2.0 ** (depth * (np.sin(np.pi * t) - 0.5))
    if kind == "fall-rise":
        return 2.0 ** (depth * (0.5 - np.sin(np.pi * t)))
    # "flat": tremulous, a 7 Hz vibrato of `depth` octaves.
    return 2.0 ** (depth * np.sin(2 * np.pi * 7.0 * seconds))


def _resonator(freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """One second-order section of a formant resonance with unit gain at DC."""
    r = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2 * np.pi * freq / sample_rate
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.concatenate([[a.sum(), 0.0, 0.0], a])


def _stepwise_noise(rng: np.random.Generator, n: int, step: int) -> np.ndarray:
    """Gaussian values held for ``step`` samples each, shape (n,)."""
    return np.repeat(rng.standard_normal(-(-n // step)), step)[:n]


def _burst_envelope(n: int, bursts: int, sample_rate: int) -> np.ndarray:
    """Amplitude envelope (n,) of ``bursts`` equal voiced bursts filling 70 % of the clip.

    Each burst has a raised-cosine onset (30 ms) and offset (80 ms, shorter for short
    bursts); the pauses between bursts are silent (the caller adds the noise floor).
    """
    envelope = np.zeros(n)
    if bursts == 1:
        spans = [(0, n)]
    else:
        period = n / bursts
        spans = [(round(i * period), round(i * period + 0.7 * period)) for i in range(bursts)]
    for start, stop in spans:
        length = stop - start
        attack = min(int(0.03 * sample_rate), length // 4)
        release = min(int(0.08 * sample_rate), length // 3)
        env = np.ones(length)
        if attack:
            env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
        if release:
            env[length - release :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
        envelope[start:stop] = env
    return envelope


def synthesize(
    traits: SpeakerTraits,
    style: EmotionStyle,
    rng: np.random.Generator,
    config: SyntheticConfig,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """One clip, float64 shape (T,), peak at the style's level (plus a little variation)."""
    premise = config.preset == "premise"
    duration = float(
        np.clip(style.duration * rng.uniform(0.75, 1.25), config.min_duration, config.max_duration)
    )
    n = round(duration * sample_rate)
    seconds = np.arange(n) / sample_rate
    t = seconds / duration
    # Slow random drift of F0 (a few percent) so that no two clips are identical.
    drift = np.interp(t, np.linspace(0, 1, 6), rng.normal(0.0, 0.03, 6))
    contour = _contour(style.contour, style.depth, t, seconds)
    if premise:
        # The contour's median at the speaker's F0: the F0 level carries no emotion.
        contour = contour / np.median(contour)
    f0 = traits.f0 * style.f0_scale * contour
    step = int(0.005 * sample_rate)
    if style.jitter:
        f0 = f0 * (1.0 + style.jitter * _stepwise_noise(rng, n, step))
    f0 = np.clip(f0 * (1.0 + drift), 60.0, 1100.0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    if premise:
        tilt = traits.tilt + PREMISE_TILT_OFFSET
    else:
        # Louder styles have a flatter source spectrum (more energy in high harmonics).
        tilt = traits.tilt + 0.04 * (-style.level_db)
    harmonics = max(1, int(0.45 * sample_rate / f0.max()))
    source = np.zeros(n)
    for k in range(1, harmonics + 1):
        source += np.sin(k * phase) * k**-tilt
    source /= np.sqrt(np.mean(source**2)) + 1e-12
    noise = rng.standard_normal(n)
    excitation = (1.0 - style.breathiness) * source + style.breathiness * noise
    if style.shimmer:
        excitation *= np.clip(1.0 + style.shimmer * _stepwise_noise(rng, n, step), 0.0, None)
    sos = np.stack(
        [
            _resonator(
                min(f * traits.formant_scale * style.formant_shift, 0.45 * sample_rate),
                bw,
                sample_rate,
            )
            for f, bw in zip(BASE_FORMANTS, BANDWIDTHS, strict=True)
        ]
    )
    voice = sosfilt(sos, excitation)
    voice *= _burst_envelope(n, style.bursts, sample_rate)
    peak = 10.0 ** ((style.level_db + rng.uniform(-2.0, 2.0)) / 20.0)
    voice *= peak / (np.max(np.abs(voice)) + 1e-12)
    # A noise floor at about -70 dBFS: real recordings are never digital silence.
    return voice + 3e-4 * rng.standard_normal(n)


def generate(out_dir: str | os.PathLike[str], config: SyntheticConfig | None = None) -> Path:
    """Write the corpus under ``out_dir`` (``wav/*.wav``, ``labels.csv``, ``synthetic.json``).

    Returns the path of ``labels.csv``. The label file and the settings are written last, so
    an interrupted run leaves no ``labels.csv`` and is regenerated next time.
    """
    config = config or SyntheticConfig()
    out = Path(out_dir)
    traits = [speaker_traits(config, s) for s in range(config.speakers)]
    rows = []
    for clip_id, speaker, emotion in plan(config):
        rng = make_rng(config.seed, "synthetic-clip", clip_id)
        index = int(speaker[3:]) - 1
        audio = synthesize(traits[index], STYLES[config.preset][emotion], rng, config)
        rel = f"wav/{clip_id}.wav"
        write_wav(out / rel, audio)
        rows.append((rel, emotion, speaker))
    write_text(out / "synthetic.json", json.dumps(config.to_dict(), indent=1) + "\n")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("path", "emotion", "speaker"))
    writer.writerows(rows)
    return write_text(out / "labels.csv", table.getvalue())


def stored_config(data_dir: str | os.PathLike[str]) -> dict[str, object] | None:
    """The settings a generated corpus was written with, or None when there is none."""
    path = Path(data_dir) / "synthetic.json"
    if not (Path(data_dir) / "labels.csv").exists() or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ----- registration as a corpus -----------------------------------------------------------
def prepare(data_dir: Path, seed: int, options: dict[str, object]) -> dict[str, object]:
    """Generate the corpus under ``data_dir`` when it is absent; return the listing options.

    The generator seed is the ``synthetic_seed`` option (default 0), not the split seed, so
    that manifests with different split seeds share one corpus. A folder generated with other
    settings is refused rather than silently reused.
    """
    del seed
    fields = {
        "speakers": options.pop("speakers", None),
        "emotions": options.pop("emotions", None),
        "clips": options.pop("clips", None),
        "entanglement": options.pop("entanglement", None),
        "seed": options.pop("synthetic_seed", None),
        "preset": options.pop("preset", None),
    }
    try:
        config = SyntheticConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as e:
        raise DatasetError(str(e)) from None
    stored = stored_config(data_dir)
    if stored is None:
        if (Path(data_dir) / "labels.csv").exists():
            raise DatasetError(
                f"{data_dir}/labels.csv exists but was not made by the generator; "
                "use --dataset csv for it, or another --data-dir"
            )
        generate(data_dir, config)
    elif stored != config.to_dict():
        raise DatasetError(
            f"{data_dir}/ holds a synthetic corpus made with other settings "
            f"({stored}); remove it or pass another --data-dir"
        )
    return options


def list_synthetic(data_dir: Path, seed: int) -> Listing:
    """The generated corpus, listed through the CSV importer like any other corpus."""
    from pipeline.datasets.csvcorpus import list_csv

    listing = list_csv(data_dir, seed)
    config = stored_config(data_dir) or {}
    emotions = EMOTIONS[: int(config.get("emotions", len(EMOTIONS)))]
    # Generated names are unique stems already; drop the "wav__" prefix of csv ids.
    candidates = [replace(c, id=Path(c.path).stem) for c in listing.candidates]
    return replace(
        listing,
        candidates=candidates,
        source="synthetic",
        emotions=emotions,
        notes=[
            *listing.notes,
            f"synthetic corpus: {config.get('speakers')} speakers x {config.get('emotions')} "
            f"emotions, {config.get('clips')} clips, entanglement {config.get('entanglement')}, "
            f"preset {config.get('preset', 'hard-case (generator version 1)')}",
        ],
    )


SPEC = DatasetSpec(
    name="synthetic",
    title="the synthetic corpus",
    folder="Synthetic",
    obtain="it is generated on first use",
    list_clips=list_synthetic,
    options=("speakers", "emotions", "clips", "entanglement", "synthetic_seed", "preset"),
    prepare=prepare,
)
