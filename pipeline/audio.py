"""Audio I/O: decode any soundfile-readable clip to float32 mono at 16 kHz, and write WAVs.

Every source clip goes through :func:`read_source` (or :func:`load_audio`): soundfile
decodes it, channels are averaged (down-mix to mono), and ``scipy.signal.resample_poly``
brings it to :data:`SAMPLE_RATE`. A file that cannot give usable audio raises
:class:`AudioError` whose ``reason`` starts with a short category ("empty file",
"unreadable audio", ...) so that importers can record it as a failure and count failures
by category.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.atomic import write_bytes
from pipeline.errors import PipelineError
from pipeline.manifest import SAMPLE_RATE

# Failure categories of a file whose bytes could not be read (it is missing, unreadable, or
# not a regular file right now), as opposed to bytes that were read and are not usable
# audio. The first kind is transient: the data may come back (a remounted disk, a restored
# file), so ``ncore-prep perturb`` and ``validate --repair`` try such a clip again once its
# file is readable (:func:`is_transient`); the second kind is permanent for those bytes.
TRANSIENT_CATEGORIES = ("missing file", "unreadable file", "symlink loop", "not a regular file")

# Lossy codecs (Vorbis, Opus, MPEG) reconstruct a band-limited approximation whose ringing
# overshoots full scale: a voice limited at 0.99 decodes to 1.04-1.22 (tests/test_audio.py),
# a full-scale square wave to 1.4-1.6 (Opus at low rates more). Such a file is accepted
# when its decoded peak is at most LOSSY_PEAK_TOLERANCE (+6 dB), and its samples are
# clipped to [-1, 1] after the resampling to 16 kHz (which rings too), as the int16 shards
# would clip them anyway; a lossy file louder than that, and any lossless float file above
# 1.0, is refused as out of range.
LOSSY_PEAK_TOLERANCE = 2.0
LOSSY_SUBTYPES = ("VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")


class AudioError(PipelineError):
    """A clip that cannot be used. ``reason`` is ``"<category>: <detail>"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]

    @property
    def transient(self) -> bool:
        """True when the file could not be read (see :data:`TRANSIENT_CATEGORIES`)."""
        return is_transient(self.reason)


def is_transient(reason: str) -> bool:
    """Whether a failure ``reason`` says the file could not be read (it may come back),
    rather than that its audio is unusable."""
    return reason.split(":", 1)[0] in TRANSIENT_CATEGORIES


def readable_now(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is now a regular file this process may read (no bytes are read)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK)


@dataclass(frozen=True)
class SourceAudio:
    """A decoded clip and facts about its source file.

    ``audio`` is float32, shape (T,), mono at 16 kHz; ``sample_rate`` and ``channels``
    describe the source file; ``num_bytes`` and ``sha256`` identify its exact bytes.
    """

    audio: np.ndarray
    sample_rate: int
    channels: int
    num_bytes: int
    sha256: str


def read_source(path: str | os.PathLike[str]) -> SourceAudio:
    """Read ``path`` once, checksum its bytes and decode them (see :func:`decode_audio`)."""
    path = Path(path)
    try:
        info = os.stat(path)  # before opening: opening a FIFO would block for ever
    except FileNotFoundError:
        raise AudioError(f"missing file: {path.name} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioError(f"symlink loop: {path.name} never reaches a file") from None
        raise AudioError(f"unreadable file: {path.name}: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(f"unreadable file: {path.name} is a folder")
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(f"not a regular file: {path.name} is a FIFO, socket or device")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AudioError(f"missing file: {path.name} does not exist") from None
    except IsADirectoryError:
        raise AudioError(f"unreadable file: {path.name} is a folder") from None
    except OSError as e:
        raise AudioError(f"unreadable file: {path.name}: {e.strerror or e}") from None
    audio, sample_rate, channels = decode_audio(data)
    return SourceAudio(
        audio=audio,
        sample_rate=sample_rate,
        channels=channels,
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` to float32 mono 16 kHz.

    Returns ``(audio, source_sample_rate, source_channels)`` with ``audio`` of shape (T,).
    Raises :class:`AudioError` for a missing, empty, unreadable, zero-length or
    non-finite (NaN / inf) file.
    """
    src = read_source(path)
    return src.audio, src.sample_rate, src.channels


def decode_audio(data: bytes) -> tuple[np.ndarray, int, int]:
    """Decode the bytes of an audio file; same contract as :func:`load_audio`."""
    if len(data) == 0:
        raise AudioError("empty file: 0 bytes")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            lossy = str(f.subtype).upper() in LOSSY_SUBTYPES
            sample_rate = f.samplerate
            frames = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        # soundfile's messages are long and mention the in-memory buffer; keep the gist.
        detail = str(e).split("\n")[0].rsplit(":", 1)[-1].strip(" .")
        raise AudioError(
            f"unreadable audio: not a format soundfile can decode ({detail})"
        ) from None
    channels = int(frames.shape[1])
    if frames.shape[0] == 0 or channels == 0:
        raise AudioError("zero-length audio: the file holds no samples")
    if not np.isfinite(frames).all():
        bad = int(np.count_nonzero(~np.isfinite(frames)))
        raise AudioError(f"non-finite samples: {bad} NaN or infinite values")
    # Integer PCM decodes into [-1, 1); only a float or a lossy file can go beyond full
    # scale. A float file beyond it would be hard-clipped by the int16 shards, and scaling it
    # silently would change its level against every other clip: it is refused, the user
    # decides. A lossy file's codec ringing is tolerated (LOSSY_PEAK_TOLERANCE) and clipped.
    peak = float(np.max(np.abs(frames)))
    if peak > 1.0 and not (lossy and peak <= LOSSY_PEAK_TOLERANCE):
        over = float(np.mean(np.abs(frames) > 1.0))
        raise AudioError(
            f"out-of-range samples: {'lossy' if lossy else 'float'} peak {peak:.3g} exceeds "
            f"{'the codec tolerance ' + str(LOSSY_PEAK_TOLERANCE) if lossy else 'full scale 1.0'}"
            f" ({over:.1%} of samples above 1.0); normalise the file"
        )
    # Mean of channels in float64, then one polyphase resampling to 16 kHz.
    mono = frames.astype(np.float64).mean(axis=1)
    audio = resample_to(mono, int(sample_rate), SAMPLE_RATE)
    if lossy:  # the codec's (and the resampler's) ringing, clipped as int16 storage would
        audio = np.clip(audio, -1.0, 1.0)
    audio = audio.astype(np.float32)
    if audio.size == 0:
        raise AudioError(f"zero-length audio: {frames.shape[0]} samples at {sample_rate} Hz")
    return audio, int(sample_rate), channels


def resample_to(audio: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a (T,) signal to float64 of length ceil(T * target / source)."""
    if source_rate == target_rate:
        return np.asarray(audio, dtype=np.float64)
    g = gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    from scipy.signal import resample_poly  # imported on first use (a heavy import)

    return resample_poly(np.asarray(audio, dtype=np.float64), up, down, window=_lowpass(up, down))


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter that ``resample_poly`` designs by default (Kaiser, beta 5).

    Designed once per rate pair instead of once per clip (8,821 taps for 44.1 -> 16 kHz);
    the output is identical to ``resample_poly(x, up, down)``.
    """
    max_rate = max(up, down)
    from scipy.signal import firwin

    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def write_wav(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    subtype: str = "PCM_16",
) -> None:
    """Write ``audio`` (float in [-1, 1], shape (T,) or (T, channels)) as a WAV file.

    Values are clipped to [-1, 1] first (PCM cannot hold more). The file is written to a
    temporary name and renamed, so a reader never sees a half-written WAV. The bytes depend
    only on the samples, rate and subtype (no timestamps), so regeneration is bit-exact.
    """
    data = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, subtype=subtype, format="WAV")
    write_bytes(path, buffer.getvalue())
