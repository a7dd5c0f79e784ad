"""Small corpus folders in the real releases' layouts, for the importer tests.

Audio is real WAV written with soundfile; to keep the 7,077-file ReCANVo tree fast, its
files are tiny (64 samples) and share a few byte strings.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.manifest import SAMPLE_RATE

RECANVO_PARTICIPANTS = ("P01", "P02", "P03", "P05", "P06", "P08", "P11", "P16")
# docs/design.md section 2: clips per label per participant in the ReCANVo release.
RECANVO_TABLE = {
    "affectionate": (0, 126, 0, 0, 3, 0, 0, 0),
    "bathroom": (20, 0, 0, 0, 0, 0, 0, 0),
    "delighted": (357, 43, 25, 235, 227, 39, 207, 139),
    "dysregulated": (212, 0, 302, 116, 5, 13, 22, 34),
    "dysregulation-bathroom": (18, 0, 0, 0, 0, 0, 0, 0),
    "dysregulation-sick": (74, 0, 0, 0, 0, 0, 0, 0),
    "frustrated": (150, 56, 47, 283, 30, 781, 27, 162),
    "glee": (1, 0, 7, 0, 0, 0, 0, 0),
    "greeting": (0, 0, 0, 0, 0, 0, 3, 0),
    "happy": (0, 0, 0, 61, 0, 0, 0, 0),
    "help": (0, 0, 0, 24, 0, 0, 0, 0),
    "laugh": (0, 0, 8, 0, 0, 0, 0, 0),
    "laughter": (0, 38, 0, 13, 0, 42, 0, 0),
    "more": (0, 0, 0, 0, 0, 22, 0, 0),
    "no": (0, 0, 0, 0, 0, 0, 0, 12),
    "protest": (0, 0, 20, 0, 0, 1, 0, 0),
    "request": (130, 13, 61, 6, 124, 44, 22, 19),
    "selftalk": (564, 34, 55, 286, 56, 503, 33, 354),
    "social": (182, 247, 0, 0, 1, 93, 52, 59),
    "tablet": (0, 0, 0, 0, 0, 7, 0, 0),
    "yes": (0, 0, 0, 0, 123, 0, 0, 0),
    "hunger": (0, 0, 0, 4, 0, 0, 0, 0),
}


def tone(seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine (T,) or (T, channels) with a different amplitude per channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x
    return np.stack([x * (1.0 - 0.5 * c) for c in range(channels)], axis=1)


def wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def nan_wav_bytes() -> bytes:
    x = np.full(800, 0.1, dtype=np.float32)
    x[10] = np.nan
    return wav_bytes(x, SAMPLE_RATE, subtype="FLOAT")


def make_vivae(root: Path, names: list[str], sample_rate: int = 44100) -> Path:
    """``root/full_set/<name>`` for each name (0.1 s tones), plus a core_set copy of one."""
    full = root / "full_set"
    full.mkdir(parents=True)
    for i, name in enumerate(names):
        data = wav_bytes(tone(0.1, sample_rate, 200 + 20 * i), sample_rate)
        (full / name).write_bytes(data)
    (root / "core_set").mkdir()
    (root / "core_set" / names[0]).write_bytes((full / names[0]).read_bytes())
    return root


def recanvo_rows(table: dict[str, tuple[int, ...]] = RECANVO_TABLE) -> list[tuple[str, str, str]]:
    """(Filename, Participant, Label) rows; most names look like the release's, some not."""
    rows = []
    i = 0
    for label, counts in table.items():
        for participant, n in zip(RECANVO_PARTICIPANTS, counts, strict=True):
            for _ in range(n):
                if i % 97 == 5:
                    name = f"Clip {i} (2).wav"  # the release has dozens of odd names
                else:
                    name = f"2001{i % 30:02d}_2142_00-13-{i % 60:02d}.06--00-13-04.{i:04d}.wav"
                rows.append((name, participant, label))
                i += 1
    return rows


def make_recanvo(
    root: Path, rows: list[tuple[str, str, str]], samples: int = 64, crlf: bool = True
) -> Path:
    """A flat folder of 44.1 kHz WAVs (mono and stereo alternating) plus the CRLF label table."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    end = "\r\n" if crlf else "\n"
    lines = ["Filename,Participant,Label"]
    for i, (name, participant, label) in enumerate(rows):
        # Other noise in every file: byte-identical files are duplicates at import.
        shape = (samples, 2) if i % 2 else (samples,)
        (root / name).write_bytes(wav_bytes(0.1 * rng.standard_normal(shape), 44100))
        quoted = f'"{name}"' if "," in name else name
        lines.append(f"{quoted},{participant},{label}")
    (root / "dataset_file_directory.csv").write_bytes((end.join(lines) + end).encode())
    return root


def make_csv_tree(root: Path, clips: int = 40, seconds: float = 0.3) -> Path:
    """A CSV corpus: WAVs ``a00.wav``... (16 kHz tones) and ``labels.csv`` with two emotions
    and four speakers, for ``ncore-prep manifest --dataset csv``."""
    root.mkdir(parents=True)
    rows = ["path,emotion,speaker"]
    for i in range(clips):
        (root / f"a{i:02d}.wav").write_bytes(wav_bytes(tone(seconds, 16000, 200.0 + 10 * i), 16000))
        rows.append(f"a{i:02d}.wav,{'happy' if i % 2 else 'sad'},spk{i % 4}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
