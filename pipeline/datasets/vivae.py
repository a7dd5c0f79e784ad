"""VIVAE (Holz et al., 2022; Zenodo 4066235): 1,085 nonverbal vocalisations, 11 speakers.

Layout: ``VIVAE/full_set/*.wav`` (``core_set/`` is a 480-file subset with the same names).
Names are ``<speaker>_<emotion>_<intensity>_<item>.wav``, e.g. ``S01_achievement_low_01.wav``;
the item is usually two digits but also one or three, so it is parsed as a string. The
intensity is kept as the extra label ``intensity``; the clip id is the file stem.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.datasets.base import (
    IMPORT_STAGE,
    Candidate,
    DatasetError,
    DatasetSpec,
    Listing,
    safe_id,
)
from pipeline.manifest import Failure

EMOTIONS = ("achievement", "anger", "fear", "pain", "pleasure", "surprise")
INTENSITIES = ("low", "moderate", "strong", "peak")
SPEAKERS = tuple(f"S{i:02d}" for i in range(1, 12))
NAME = re.compile(
    r"^(?P<speaker>S\d{2})_(?P<emotion>[a-z]+)_(?P<intensity>[a-z]+)_(?P<item>\d{1,3})$"
)


def parse_name(stem: str) -> tuple[str, str, str, str] | str:
    """``(speaker, emotion, intensity, item)`` of a VIVAE file stem, or why it does not parse."""
    m = NAME.match(stem)
    if m is None:
        return "unexpected file name: not <speaker>_<emotion>_<intensity>_<item>"
    speaker, emotion, intensity, item = m.group("speaker", "emotion", "intensity", "item")
    if emotion not in EMOTIONS:
        return f"label outside the vocabulary rules: emotion {emotion!r}"
    if intensity not in INTENSITIES:
        return f"label outside the vocabulary rules: intensity {intensity!r}"
    return speaker, emotion, intensity, item


def list_vivae(data_dir: Path, seed: int, subset: str = "full_set") -> Listing:
    """List ``<data_dir>/<subset>/*.wav`` (or ``<data_dir>/*.wav`` when pointed at the subset)."""
    del seed
    if subset not in ("full_set", "core_set"):
        raise DatasetError(f"--subset must be full_set or core_set, not {subset!r}")
    folder = data_dir / subset
    prefix = f"{subset}/"
    if not folder.is_dir():
        if any(p.suffix.lower() == ".wav" for p in data_dir.iterdir()):
            folder, prefix = data_dir, ""
        else:
            raise DatasetError(
                f"VIVAE: no {subset}/ folder and no .wav files in {data_dir}/; "
                "pass --data-dir pointing at the unpacked VIVAE folder"
            )
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    candidates, rejected = [], []
    for p in files:
        rel = prefix + p.name
        clip_id = safe_id(p.stem)
        parsed = parse_name(p.stem)
        if isinstance(parsed, str):
            rejected.append(Failure(clip_id, IMPORT_STAGE, parsed, rel))
            continue
        speaker, emotion, intensity, item = parsed
        extra = {"intensity": intensity, "item": item}
        candidates.append(Candidate(clip_id, rel, emotion, speaker, extra))
    return Listing(
        source=f"vivae:{subset}",
        candidates=candidates,
        rejected=rejected,
        emotions=EMOTIONS,
        speakers=SPEAKERS,
    )


SPEC = DatasetSpec(
    name="vivae",
    title="VIVAE",
    folder="VIVAE",
    obtain="download it from https://zenodo.org/records/4066235 and unpack it",
    list_clips=list_vivae,
    options=("subset",),
)
