"""`pipeline export`: the stored audio as WAV, bit for bit, and the source picture over the sample's window with the
stored audio as its sound."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

import pipeline
from pipeline.cli.app import app

runner = CliRunner()
TRIMMED = "v2s_greensquare_trim_000"   # its manifest window starts at 0.312 s of the source video


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    n = min(len(a), len(b)) - max_lag
    scores = [(float(np.corrcoef(a[max(lag, 0): max(lag, 0) + n], b[max(-lag, 0): max(-lag, 0) + n])[0, 1]), lag)
              for lag in range(-max_lag, max_lag + 1, 16)]
    return max(scores)


def test_a_video_sample_becomes_its_wav_and_the_source_window_with_that_sound(extracted, corpus, tmp_path):
    from decord import AudioReader, VideoReader

    out_dir, _ = extracted
    sample = pipeline.open_output(out_dir)[TRIMMED]
    result = runner.invoke(app, ["export", str(out_dir), "--key", TRIMMED, "--out", str(tmp_path),
                                 "--data-root", str(corpus.root)])
    assert result.exit_code == 0, result.output
    wave, rate = sf.read(tmp_path / f"{TRIMMED}.wav", dtype="float32")
    assert rate == 16000 and np.array_equal(wave, sample.audio)   # the stored samples exactly (16-bit both)
    video = VideoReader(str(tmp_path / f"{TRIMMED}.mp4"))
    duration = sample.meta["duration_s"]
    assert abs(len(video) / video.get_avg_fps() - duration) <= 0.1
    sound = AudioReader(str(tmp_path / f"{TRIMMED}.mp4"), sample_rate=16000, mono=True)[:].asnumpy()[0]
    corr, lag = best_correlation(sound, sample.audio, 1600)
    assert corr > 0.9 and abs(lag) <= 800, (corr, lag)                   # the stored audio, in time (AAC is lossy)
    source = VideoReader(str(corpus.root / sample.meta["source"]["video_path"]))
    first = video[0].asnumpy().astype(np.float32)
    at_start = source[int(round(sample.meta["source"]["start_s"] * source.get_avg_fps()))].asnumpy()
    at_zero = source[0].asnumpy()
    assert np.abs(first - at_start).mean() < np.abs(first - at_zero).mean()   # the window, not the file's start


def test_audio_only_samples_and_a_missing_data_root_say_what_was_made(extracted, tmp_path):
    out_dir, _ = extracted
    out = pipeline.open_output(out_dir)
    tts = out.filter(task="tts").keys()[0]
    result = runner.invoke(app, ["export", str(out_dir), "--key", tts, "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / f"{tts}.wav").is_file() and not (tmp_path / f"{tts}.mp4").exists()
    result = runner.invoke(app, ["export", str(out_dir), "--key", TRIMMED, "--out", str(tmp_path)])
    assert result.exit_code == 0 and "give --data-root" in " ".join(result.output.split())
    assert not (tmp_path / f"{TRIMMED}.mp4").exists()
    result = runner.invoke(app, ["export", str(out_dir), "--key", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no sample 'nope'" in result.output
