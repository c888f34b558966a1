"""stages/audio.py: log-mel, loudness, PCM16/FLAC, and AudioFeatureStage alone on real (espeak-ng) speech."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torchaudio

from stages.audio import (
    AudioFeatureStage,
    LogMel,
    LoudnessConfig,
    MelConfig,
    decode_flac,
    encode_flac,
    measure_loudness,
    normalize_loudness,
    peak_dbfs,
    quantize_pcm16,
)

SR = 16000


def tone(freq_hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def log_mel() -> LogMel:
    return LogMel(MelConfig())


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Real speech: espeak-ng at 22,050 Hz, resampled to 16 kHz. float32 [N]."""
    import soundfile

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng binary not installed")
    path = tmp_path_factory.mktemp("speech") / "f.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(path), "The quick brown fox jumps over the lazy dog."], check=True
    )
    wave, sr = soundfile.read(path, dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(wave), sr, SR).numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Log-mel


def test_mel_config_defaults():
    cfg = MelConfig()
    assert cfg.frames_per_second == 100
    assert cfg.pad == 432
    d = cfg.to_dict()
    assert d["n_mels"] == 64 and d["hop_length"] == 160 and d["norm"] == "slaney" and d["frames_per_second"] == 100
    with pytest.raises(ValueError):
        MelConfig(f_max=9000.0)


@pytest.mark.parametrize(
    "n", [0, 1, 100, 159, 160, 161, 319, 320, 431, 432, 433, 863, 1023, 1024, 1025, 16000, 16159, 16160, 48_013]
)
def test_mel_frames_are_floor_n_over_hop(log_mel, n):
    wave = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    mel = log_mel(wave)
    assert mel.shape == (n // 160, 64)
    assert mel.dtype == np.float32
    assert np.isfinite(mel).all()
    assert (mel >= math.log(1e-5) - 1e-6).all()


def _reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """Independent numpy STFT: reflect pad 432 each side, Hann (periodic) 1024 window, hop 160, |X|, Slaney mel, ln."""
    padded = np.pad(wave.astype(np.float64), 432, mode="reflect")
    num_frames = 1 + (padded.size - 1024) // 160
    window = np.hanning(1025)[:-1]  # periodic Hann
    frames = np.stack([padded[i * 160 : i * 160 + 1024] * window for i in range(num_frames)])
    magnitude = np.abs(np.fft.rfft(frames, axis=1))  # [T, 513]
    fbanks = torchaudio.functional.melscale_fbanks(513, 0.0, 8000.0, 64, SR, norm="slaney", mel_scale="slaney")
    mel = magnitude @ fbanks.double().numpy()  # [T, 64]
    return np.log(np.maximum(mel, 1e-5))


@pytest.mark.parametrize("n", [300, 433, 8000])  # 300: shorter than the pad, so the reflection repeats
def test_mel_matches_independent_reference(log_mel, n):
    wave = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.2
    expected = _reference_log_mel(wave)
    got = log_mel(wave)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_mel_of_1khz_tone_peaks_in_its_band(log_mel):
    mel = log_mel(tone(1000.0, 1.0))
    fbanks = torchaudio.functional.melscale_fbanks(513, 0.0, 8000.0, 64, SR, norm="slaney", mel_scale="slaney")
    band_1khz = int(fbanks[64].argmax())  # FFT bin 64 = 1000 Hz at 15.625 Hz per bin
    profile = mel[2:-2].mean(axis=0)
    assert abs(int(profile.argmax()) - band_1khz) <= 1
    assert profile.max() - np.median(profile) > 5.0  # a clear peak, in nats
    assert 15 <= band_1khz <= 25  # sanity: Slaney scale is linear below 1 kHz (about 15 bands up to 1 kHz)


def test_mel_batch_equals_one_by_one(log_mel):
    waves = np.random.default_rng(2).standard_normal((3, 4000)).astype(np.float32) * 0.1
    batched = log_mel.batch(waves)
    assert batched.shape == (3, 25, 64)
    for i in range(3):
        np.testing.assert_allclose(batched[i], log_mel(waves[i]), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Loudness


def test_short_clip_measures_like_a_long_one():
    short = measure_loudness(tone(1000.0, 0.2), SR)
    long = measure_loudness(tone(1000.0, 2.0), SR)
    assert math.isfinite(short)
    assert abs(short - long) < 0.5


def test_digital_silence_is_minus_inf():
    assert measure_loudness(np.zeros(SR, np.float32), SR) == -math.inf
    assert measure_loudness(np.zeros(100, np.float32), SR) == -math.inf
    assert measure_loudness(np.zeros(0, np.float32), SR) == -math.inf
    assert measure_loudness(np.full(SR, 1e-9, np.float32), SR) == -math.inf  # under BS.1770's absolute gate


def test_speech_normalised_to_target(speech):
    out, info = normalize_loudness(speech, SR, LoudnessConfig())
    assert not info.silent and not info.peak_limited
    assert abs(measure_loudness(out, SR) - (-23.0)) < 0.1
    assert info.gain_db == pytest.approx(-23.0 - info.measured_lufs)
    assert info.peak_dbfs_after <= -1.0
    assert out.dtype == np.float32 and out.shape == speech.shape


def _check_limited(out, info, cfg):
    assert info.peak_limited
    assert peak_dbfs(out) <= cfg.peak_dbfs + 1e-3
    assert peak_dbfs(quantize_pcm16(out)) <= cfg.peak_dbfs + 1e-3
    assert info.peak_dbfs_after == pytest.approx(cfg.peak_dbfs, abs=1e-3)
    assert measure_loudness(out, SR) < cfg.target_lufs  # limiting gives up loudness, never the peak


def test_click_train_is_peak_limited():
    """Transient-heavy sound (a ticking clock): peak far above its loudness, so -23 LUFS would clip."""
    clicks = np.zeros(2 * SR, np.float32)
    clicks[::1600] = 0.5
    cfg = LoudnessConfig()
    out, info = normalize_loudness(clicks, SR, cfg)
    _check_limited(out, info, cfg)


def test_loud_square_wave_is_peak_limited_at_a_hot_target():
    """A square wave's peak sits ~0.7 dB over its loudness: any target above about -0.3 LUFS must be limited."""
    square = (0.9 * np.sign(np.sin(2 * np.pi * 440 * np.arange(SR) / SR))).astype(np.float32)
    cfg = LoudnessConfig(target_lufs=0.0)
    out, info = normalize_loudness(square, SR, cfg)
    _check_limited(out, info, cfg)


def test_silent_wave_is_returned_unchanged():
    quiet = np.full(SR, 1e-9, np.float32)
    out, info = normalize_loudness(quiet, SR, LoudnessConfig(remove_dc=False))
    assert info.silent and info.gain_db == 0.0 and not info.peak_limited
    np.testing.assert_array_equal(out, quiet)


def test_dc_offset_is_removed_before_loudness():
    """A tone riding on a DC offset of 0.9 (issue 15, 9b) is stored without the offset: the offset is no sound,
    and left in it would set the peak limit. A pure offset is silence and is stored as zeros."""
    offset = tone(440, 2.0, amplitude=0.05) + np.float32(0.9)
    out, info = normalize_loudness(offset, SR, LoudnessConfig())
    assert abs(float(out.mean())) < 1e-4 and not info.silent and not info.peak_limited
    assert measure_loudness(out, SR) == pytest.approx(-23.0, abs=0.1)
    stage_row = AudioFeatureStage()([{"clip_id": "dc", "task": "v2s", "audio": np.full(SR, 0.9, np.float32)}])[0]
    assert stage_row["silent"] and not np.any(stage_row["audio"])
    kept, _ = normalize_loudness(offset, SR, LoudnessConfig(remove_dc=False))
    assert float(kept.mean()) > 0.1  # the switch is real: without it the offset stays


# ----------------------------------------------------------------------------------------------------------------------
# PCM16 and FLAC


def test_quantize_is_on_the_int16_grid():
    wave = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, 1.0 / 65536 + 1e-9, 0.123456], np.float32)
    q = quantize_pcm16(wave)
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q * 32768, np.round(q * 32768))
    assert q[1] == 32767 / 32768 and q[2] == -1.0 and q[3] == 32767 / 32768 and q[4] == -1.0 and q[5] == 0.5
    np.testing.assert_array_equal(quantize_pcm16(q), q)  # idempotent


def test_flac_round_trip_is_bit_exact_and_bytes_are_deterministic(speech):
    q = quantize_pcm16(speech * 3.0)  # some samples clip: the grid's edges round-trip too
    data = encode_flac(q, SR)
    assert data[:4] == b"fLaC"
    assert encode_flac(q, SR) == data
    decoded, sr = decode_flac(data)
    assert sr == SR and decoded.dtype == np.float32 and decoded.shape == q.shape
    np.testing.assert_array_equal(decoded, q)
    np.testing.assert_array_equal(decode_flac(encode_flac(speech, SR))[0], quantize_pcm16(speech))


# ----------------------------------------------------------------------------------------------------------------------
# The stage


def test_audio_stage_on_a_few_rows(speech, log_mel):
    noise = (np.random.default_rng(3).standard_normal(SR * 2) * 0.05).astype(np.float32)
    quiet = np.full(SR, 1e-9, np.float32)
    nan = speech.copy()
    nan[100] = np.nan
    inf = noise.copy()
    inf[5] = np.inf
    rows = [
        {"clip_id": "speech", "task": "tts", "audio": speech.copy()},
        {"clip_id": "sound", "task": "v2s", "audio": noise.copy()},
        {"clip_id": "silent_sound", "task": "v2s", "audio": quiet.copy()},
        {"clip_id": "silent_speech", "task": "visual_tts", "audio": quiet.copy()},
        {"clip_id": "nan", "task": "tts", "audio": nan},
        {"clip_id": "inf", "task": "v2s", "audio": inf},
        {"clip_id": "tiny", "task": "v2s", "audio": noise[:100].copy()},
    ]
    out = {r["clip_id"]: r for r in AudioFeatureStage()(rows)}

    for key, source in [("speech", speech), ("sound", noise)]:
        row = out[key]
        assert row.get("reject_reason") is None, row.get("reject_detail")
        assert row["audio"].dtype == np.float32 and row["audio"].shape == source.shape
        assert row["mel"].dtype == np.float16 and row["mel"].shape == (source.size // 160, 64)
        decoded, sr = decode_flac(row["flac"])
        assert sr == SR
        np.testing.assert_array_equal(decoded, row["audio"])  # the stored FLAC is the row's audio...
        np.testing.assert_array_equal(row["mel"], log_mel(decoded).astype(np.float16))  # ...and the mel is its mel
        assert abs(measure_loudness(row["audio"], SR) - (-23.0)) < 0.1
        assert row["loudness_lufs"] == pytest.approx(measure_loudness(source, SR))
        assert row["gain_db"] == pytest.approx(-23.0 - row["loudness_lufs"])
        assert row["silent"] is False and row["peak_limited"] is False

    silent = out["silent_sound"]
    assert silent.get("reject_reason") is None
    assert silent["silent"] is True and silent["gain_db"] == 0.0 and silent["loudness_lufs"] == -math.inf
    np.testing.assert_array_equal(silent["audio"], quantize_pcm16(quiet))
    assert silent["mel"].shape == (100, 64)

    assert out["silent_speech"]["reject_reason"] == "silent_audio"
    assert "LUFS" in out["silent_speech"]["reject_detail"]
    assert out["silent_speech"]["reject_stage"] == "audio"
    assert out["nan"]["reject_reason"] == "bad_samples"
    assert out["inf"]["reject_reason"] == "bad_samples"
    assert out["tiny"]["reject_reason"] == "too_short"
    assert "mel" not in out["nan"] and "flac" not in out["silent_speech"]


def test_audio_stage_rejects_wrong_rate_and_shape():
    stage = AudioFeatureStage()
    rows = [
        {"task": "v2s", "audio": tone(440.0, 1.0), "sample_rate": 22050},
        {"task": "v2s", "audio": np.zeros((2, SR), np.float32)},
    ]
    stage(rows)
    assert [r["reject_reason"] for r in rows] == ["unexpected_error", "unexpected_error"]
    assert "22050" in rows[0]["reject_detail"] and "shape" in rows[1]["reject_detail"]


def test_audio_stage_pickles_before_and_after_setup():
    """Ray ships stage objects to workers: they must pickle, and a copy must give the same features."""
    import pickle

    stage = AudioFeatureStage()
    fresh = pickle.loads(pickle.dumps(stage))
    first = stage([{"task": "v2s", "audio": tone(440.0, 0.5)}])[0]
    warm = pickle.loads(pickle.dumps(stage))
    for copy in (fresh, warm):
        again = copy([{"task": "v2s", "audio": tone(440.0, 0.5)}])[0]
        assert again["flac"] == first["flac"]
        np.testing.assert_array_equal(again["mel"], first["mel"])
