"""pipeline.audio: decoding to 16 kHz mono, failure reasons, deterministic WAV writing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import SAMPLE_RATE, AudioError, load_audio, read_source, write_wav
from pipeline.testing.corpus_trees import nan_wav_bytes, tone, wav_bytes


def _peak_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


@pytest.mark.parametrize("source_rate", [44100, 22050, 48000, 16000, 8000])
def test_resampled_to_16k_keeps_pitch_and_duration(tmp_path, source_rate):
    path = tmp_path / "a.wav"
    sf.write(path, tone(0.5, source_rate, 1000.0), source_rate)
    audio, rate, channels = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert (rate, channels) == (source_rate, 1)
    assert abs(len(audio) - 0.5 * SAMPLE_RATE) <= 1
    assert abs(_peak_hz(audio, SAMPLE_RATE) - 1000.0) < 5.0


def test_stereo_is_mean_of_channels(tmp_path):
    left = tone(0.2, 44100, 500.0)
    right = tone(0.2, 44100, 1500.0)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    sf.write(tmp_path / "m.wav", (left + right) / 2, 44100, subtype="FLOAT")
    stereo, _, channels = load_audio(tmp_path / "s.wav")
    mono, _, _ = load_audio(tmp_path / "m.wav")
    assert channels == 2
    np.testing.assert_allclose(stereo, mono, atol=1e-6)


def test_checksum_and_size_identify_the_bytes(tmp_path):
    data = wav_bytes(tone(0.1, 16000), 16000)
    (tmp_path / "a.wav").write_bytes(data)
    src = read_source(tmp_path / "a.wav")
    assert src.num_bytes == len(data)
    assert src.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("content", "category"),
    [
        (b"", "empty file"),
        (b"RIFF this is not a wave file at all", "unreadable audio"),
        (b"just some text\n", "unreadable audio"),
        (wav_bytes(np.zeros(0), 16000), "zero-length audio"),
        (nan_wav_bytes(), "non-finite samples"),
    ],
)
def test_bad_files_raise_named_error(tmp_path, content, category):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert err.value.category == category
    assert err.value.reason.startswith(category + ": ")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioError, match=r"^missing file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match=r"^unreadable file"):
        load_audio(tmp_path / "dir.wav")


def test_write_wav_is_deterministic_and_round_trips(tmp_path):
    x = 0.8 * np.sin(np.linspace(0, 300, 4000))
    write_wav(tmp_path / "a.wav", x)
    write_wav(tmp_path / "sub" / "b.wav", x)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "sub" / "b.wav").read_bytes()
    y, rate, channels = load_audio(tmp_path / "a.wav")
    assert (rate, channels) == (SAMPLE_RATE, 1)
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-9
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_wav_clips_out_of_range(tmp_path):
    write_wav(tmp_path / "a.wav", np.array([2.0, -3.0, 0.5]))
    y, _, _ = load_audio(tmp_path / "a.wav")
    assert y.max() <= 1.0 and y.min() >= -1.0 and y[0] > 0.99 and y[1] < -0.99


# ------------------------------------------- codec overshoot of lossy files (issue 22, section 5)


def _encoded(x: np.ndarray, fmt: str, subtype: str, rate: int = 16000) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


LOSSY = [("OGG", "VORBIS", 16000), ("OGG", "OPUS", 48000), ("MP3", "MPEG_LAYER_III", 16000)]


@pytest.mark.parametrize(("fmt", "subtype", "rate"), LOSSY)
def test_lossy_files_at_full_scale_decode_despite_codec_overshoot(tmp_path, fmt, subtype, rate):
    import io

    import soundfile as sf

    from pipeline.audio import LOSSY_PEAK_TOLERANCE, decode_audio
    from pipeline.testing.signals import voiced_clip

    # a voice through a limiter at 0.99 (flat tops: what a mastered recording holds)
    limited = np.clip(voiced_clip(1.0, peak=1.5, sample_rate=rate), -0.99, 0.99)
    data = _encoded(limited, fmt, subtype, rate)
    raw = np.abs(sf.read(io.BytesIO(data))[0]).max()
    assert 1.02 < raw <= LOSSY_PEAK_TOLERANCE  # the codec did overshoot
    audio, _, _ = decode_audio(data)
    assert np.abs(audio).max() <= 1.0 + 1e-6
    # far beyond any ringing: out of range, as a float file would be
    with pytest.raises(AudioError, match=r"^out-of-range samples: lossy peak"):
        decode_audio(_encoded(3.0 * limited, fmt, subtype, rate))


def test_a_float_wav_over_full_scale_stays_refused():
    from pipeline.audio import decode_audio
    from pipeline.testing.corpus_trees import wav_bytes

    x = 1.02 * np.sin(np.linspace(0, 200, 8000))
    with pytest.raises(AudioError, match=r"^out-of-range samples: float peak 1\.02"):
        decode_audio(wav_bytes(x, 16000, subtype="FLOAT"))
