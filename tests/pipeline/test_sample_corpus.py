"""The sample corpus: real media, a valid manifest, the promised variety, bad inputs, and learnable content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from manifests.schema import CLIP_ID_PATTERN, MANIFEST_SCHEMA
from manifests.tasks import TASKS
from pipeline.demo import sample_corpus
from pipeline.demo.sample_corpus import SOUND_CLASSES, make_sample_corpus, plan_sample_corpus

FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(
    FFPROBE is None or shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None,
    reason="needs ffmpeg, ffprobe and espeak-ng (apt or scripts/setup.sh)",
)

REJECTS = {
    "missing_file": "decode", "unreadable_media": "decode", "empty_file": "decode", "no_audio": "decode",
    "no_video": "decode", "too_short": "decode", "single_frame_video": "decode", "bad_samples": "decode",
    "path_escapes_root": "decode", "silent_audio": "audio", "no_phonemes": "phonemes",
    "empty_transcript": "phonemes", "no_face": "lip",
}


@pytest.fixture(scope="module", name="corpus")
def corpus_view(corpus):
    """The session's sample corpus (generated once per run, tests/conftest.py), as this module reads it."""
    table = pq.read_table(corpus.manifest)
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    return dict(root=corpus.root, manifest=corpus.manifest, table=table, rows=rows, expected=corpus.expected,
                calls=list(corpus.progress_calls))


def _good(corpus) -> dict[str, dict]:
    return {cid: row for cid, row in corpus["rows"].items() if corpus["expected"][cid]["outcome"] == "ok"}


def _one(corpus, prefix: str, variant: str) -> str:
    [cid] = [c for c in corpus["rows"] if c.startswith(prefix) and c.endswith(f"_{variant}_000")]
    return cid


def _probe(path: Path) -> dict:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)


def _stream_end_s(path: Path, selector: str) -> float:
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", selector, "-show_entries",
                          "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, check=True, text=True).stdout
    ends = [float(p) + float(d or 0) for p, d in (line.split(",")[:2] for line in out.split()) if p != "N/A"]
    return max(ends)


def _video_pts_s(path: Path) -> np.ndarray:
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, check=True, text=True).stdout
    return np.sort(np.array([float(x) for x in out.split()]))


def _frames(path: Path) -> np.ndarray:
    """[N, H, W, 3] uint8, every decoded frame (no rate conversion)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, sample_corpus.HEIGHT, sample_corpus.WIDTH, 3)


def _audio(path: Path, sr: int = 16000) -> np.ndarray:
    """[n] float32 mono at sr."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sr),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32)


def _fps(path: Path) -> float:
    video = next(s for s in _probe(path)["streams"] if s["codec_type"] == "video")
    return float(Fraction(video["r_frame_rate"]))


def _rms_at(audio: np.ndarray, sr: int, times_s: np.ndarray, half_s: float) -> np.ndarray:
    half = int(half_s * sr)
    return np.array([np.sqrt(np.mean(audio[max(int(t * sr) - half, 0):int(t * sr) + half] ** 2)) for t in times_s])


# ----------------------------------------------------------------------------------------- manifest contract


def test_manifest_matches_schema_and_ids(corpus):
    table = corpus["table"]
    assert table.schema.remove_metadata().equals(MANIFEST_SCHEMA.remove_metadata())
    assert table.schema.metadata == MANIFEST_SCHEMA.metadata
    ids = table.column("clip_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert all(CLIP_ID_PATTERN.match(cid) for cid in ids)
    assert set(table.column("task").to_pylist()) == set(TASKS)
    assert len(_good(corpus)) >= 24


def test_expected_lists_every_row_and_every_reject_reason(corpus):
    expected = corpus["expected"]
    assert set(expected) == set(corpus["rows"])
    seen = {}
    for cid, exp in expected.items():
        assert exp["outcome"] in ("ok", "reject")
        if exp["outcome"] == "reject":
            assert REJECTS[exp["reason"]] == exp["stage"], cid
            seen.setdefault(exp["reason"], []).append(cid)
    assert set(seen) == set(REJECTS)
    assert len(seen["unreadable_media"]) == 2 and len(seen["no_phonemes"]) == 2
    assert {corpus["rows"][c]["transcript"] for c in seen["no_phonemes"]} == {"🙂🙂", "?!..."}
    assert corpus["rows"][seen["empty_transcript"][0]]["transcript"] == ""
    assert corpus["rows"][seen["path_escapes_root"][0]]["audio_path"] == "../outside.wav"
    assert corpus["rows"][seen["no_video"][0]]["video_path"] is None


def test_progress_called_once_per_clip(corpus):
    assert sorted(corpus["calls"]) == sorted(corpus["rows"])


def test_good_rows_point_at_real_files_under_the_root(corpus):
    root = corpus["root"]
    for cid, row in _good(corpus).items():
        paths = [p for p in (row["video_path"], row["audio_path"]) if p is not None]
        assert paths, cid
        for p in paths:
            assert not Path(p).is_absolute() and ".." not in Path(p).parts
            assert (root / p).is_file() and (root / p).stat().st_size > 0, p
        if row["task"] == "tts":
            assert row["video_path"] is None and row["audio_path"] is not None
        else:
            assert row["video_path"] is not None
        if row["task"] != "v2s":
            assert row["transcript"] and row["speaker"]
    transcripts = " ".join(r["transcript"] or "" for r in _good(corpus).values())
    for token in ("café", "naïve", "$5", "3 apples"):
        assert token in transcripts


def test_plan_is_deterministic_and_scales():
    a = plan_sample_corpus(seed=3)
    assert a == plan_sample_corpus(seed=3)
    assert a != plan_sample_corpus(seed=4)
    big = plan_sample_corpus(seed=3, scale=10, include_bad=False)
    assert len(big) == 10 * sum(1 for s in a if s.bad is None)
    assert len({s.clip_id for s in big}) == len(big)
    with pytest.raises(ValueError):
        plan_sample_corpus(scale=0)


def test_same_seed_gives_the_same_rows(corpus, tmp_path):
    again = make_sample_corpus(tmp_path, seed=0, scale=1)
    assert pq.read_table(again).to_pylist() == corpus["table"].to_pylist()
    assert json.loads((tmp_path / "expected.json").read_text(encoding="utf-8")) == corpus["expected"]


def test_missing_tools_raise_a_clear_error(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "espeak-ng" else real_which(name))
    with pytest.raises(RuntimeError, match="espeak-ng.*scripts/setup.sh"):
        sample_corpus.find_tools()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the wheel's fallback is absent too
    with pytest.raises(RuntimeError, match="ffmpeg.*scripts/setup.sh"):
        sample_corpus.find_tools()


# ----------------------------------------------------------------------------------------- variety


def test_media_variety(corpus):
    root = corpus["root"]
    codecs, formats, rates, sample_rates, channels, rotations = set(), set(), set(), set(), set(), set()
    for row in _good(corpus).values():
        for p in (row["video_path"], row["audio_path"]):
            if p is None:
                continue
            info = _probe(root / p)
            formats.add(info["format"]["format_name"])
            for s in info["streams"]:
                codecs.add(s["codec_name"])
                if s["codec_type"] == "video":
                    rates.add(s["r_frame_rate"])
                    rot = [d.get("rotation") for d in s.get("side_data_list", []) if "rotation" in d]
                    rotations.update(abs(int(r)) for r in rot)
                else:
                    sample_rates.add(int(s["sample_rate"]))
                    channels.add(int(s["channels"]))
    assert {"h264", "vp8", "vp9", "opus", "vorbis", "aac", "flac", "pcm_s16le"} <= codecs
    assert any("mp4" in f for f in formats) and "matroska,webm" in formats and "wav" in formats and "flac" in formats
    assert {"25/1", "30000/1001", "30/1"} <= rates
    assert {8000, 16000, 22050, 44100, 48000, 96000} <= sample_rates
    assert {1, 2, 6, 8} <= channels
    assert 90 in rotations


def test_variable_frame_rate_file(corpus):
    cid = _one(corpus, "v2s_", "vfr")
    pts = _video_pts_s(corpus["root"] / corpus["rows"][cid]["video_path"])
    durations = np.round(np.diff(pts), 4)
    assert len(set(durations)) >= 2 and durations.min() > 0
    assert corpus["expected"][cid]["vfr"] is True


def test_length_cases_and_windows(corpus):
    root, expected, good = corpus["root"], corpus["expected"], _good(corpus)
    durations = {cid: expected[cid]["duration_s"] for cid in good}
    assert any(0.3 <= d < 1.0 for d in durations.values())
    assert all(expected[cid]["cut"] == (d > 10.0) for cid, d in durations.items())
    [long_id] = [cid for cid, d in durations.items() if d > 10.0]
    assert 11.5 <= _stream_end_s(root / good[long_id]["video_path"], "v:0") <= 12.5

    mismatch = good[_one(corpus, "v2s_", "avmismatch")]
    path = root / mismatch["video_path"]
    assert abs(_stream_end_s(path, "v:0") - _stream_end_s(path, "a:0")) > 0.5

    assert any(r["task"] == "v2s" and r["audio_path"] and r["video_path"] for r in good.values())
    windowed = {r["task"] for r in good.values() if r["start_s"] is not None}
    assert {"v2s", "tts", "visual_tts"} <= windowed
    for cid, r in good.items():
        if r["start_s"] is not None:
            assert 0 <= r["start_s"] < r["end_s"] <= durations[cid]
        if r["task"] == "joint":
            assert 0 <= r["speech_start_s"] < r["speech_end_s"] <= durations[cid]


def test_bad_media_is_bad_in_the_promised_way(corpus):
    root, rows = corpus["root"], corpus["rows"]

    def path(cid: str, col: str) -> Path:
        return root / rows[cid][col]

    assert not path("bad_missing_file", "audio_path").exists()
    for cid in ("bad_truncated", "bad_random_bytes"):
        probe = subprocess.run([FFPROBE, "-v", "error", "-show_streams", str(path(cid, "video_path"))],
                               capture_output=True)
        assert probe.returncode != 0, cid
    assert path("bad_empty_file", "video_path").stat().st_size == 0
    no_audio = _probe(path("bad_no_audio", "video_path"))
    assert [s["codec_type"] for s in no_audio["streams"]] == ["video"]
    assert sf.info(path("bad_too_short", "audio_path")).duration < 0.1
    single = path("bad_single_frame", "video_path")
    assert len(_video_pts_s(single)) == 1
    assert "audio" in [s["codec_type"] for s in _probe(single)["streams"]]
    nan_wave, _ = sf.read(path("bad_nan_samples", "audio_path"), dtype="float32")
    assert not np.isfinite(nan_wave).all() and np.isfinite(nan_wave).any()
    silent, sr = sf.read(path("bad_silent", "audio_path"))
    assert len(silent) == 2 * sr and not silent.any()
    assert not (root.parent / "outside.wav").exists()


# ----------------------------------------------------------------------------------------- learnable content


def _onsets(envelope: np.ndarray, rate: float, refractory_s: float = 0.25) -> np.ndarray:
    """Times (s) where the envelope rises through 20% of its peak, at most one per refractory period."""
    above = envelope >= 0.2 * envelope.max()
    onsets: list[float] = []
    for i in np.flatnonzero(above[1:] & ~above[:-1]) + 1:
        if not onsets or i / rate - onsets[-1] > refractory_s:
            onsets.append(i / rate)
    return np.array(onsets)


def test_sound_classes_are_the_documented_mapping():
    assert {k: (c.shape, c.tone_hz) for k, c in SOUND_CLASSES.items()} == {
        "redcircle": ("circle", 220.0), "greensquare": ("square", 440.0),
        "bluetriangle": ("triangle", 880.0), "hatched": ("hatched", None),
    }


@pytest.mark.parametrize("variant", ["mp4", "mkv6ch", "webmvp9", "webmvp8"])
def test_v2s_colour_predicts_sound_and_flashes_predict_onsets(corpus, variant):
    cid = _one(corpus, "v2s_", variant)
    path = corpus["root"] / corpus["rows"][cid]["video_path"]
    frames = _frames(path).astype(np.float32)[:, : sample_corpus.HEIGHT - 14]  # [N, H', W, 3], floor cut off
    brightness = np.percentile(frames.max(axis=-1).reshape(len(frames), -1), 99.7, axis=1)  # [N]

    # The colour of the shape at its brightest says which sound class it is.
    peak = frames[int(brightness.argmax())]
    pixels = peak[peak.max(axis=-1) > 0.6 * brightness.max()]
    mean_rgb = pixels.mean(axis=0)
    saturation = (mean_rgb.max() - mean_rgb.min()) / mean_rgb.max()
    if saturation < 0.25:
        seen = "hatched"
    else:
        seen = {0: "redcircle", 1: "greensquare", 2: "bluetriangle"}[int(mean_rgb.argmax())]
    assert seen == corpus["expected"][cid]["sound_class"]

    sr = 16000
    audio = _audio(path, sr)
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sr)
    band = (freqs > 60) & (freqs < 6000)
    tone_hz = SOUND_CLASSES[seen].tone_hz
    if tone_hz is None:
        flatness = np.exp(np.mean(np.log(spectrum[band] + 1e-12))) / np.mean(spectrum[band])
        assert flatness > 0.2  # broadband noise
    else:
        dominant_hz = freqs[band][spectrum[band].argmax()]
        assert abs(dominant_hz - tone_hz) < 0.03 * tone_hz

    # Every flash (a jump in brightness) coincides with a sound onset, and the other way round.
    fps = _fps(path)
    jumps = np.diff(brightness)
    flash_s = (np.flatnonzero(jumps > 0.3 * (brightness.max() - brightness.min())) + 1) / fps
    hop = sr // 200
    env = np.sqrt(np.mean(audio[: len(audio) // hop * hop].reshape(-1, hop) ** 2, axis=1))  # [T] at 200/s
    onset_s = _onsets(env, 200.0)
    assert len(flash_s) >= 2
    assert len(flash_s) == len(onset_s), (flash_s, onset_s)
    assert np.abs(flash_s - onset_s).max() <= 0.1


def _mouth_area(frames: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """[N] dark pixels (the painted mouth opening) inside the region where face.py paints the lips."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [N, H, W]
    return (luma[:, rows, cols] < 45).sum(axis=(1, 2))


# Where face.py paints the mouth (the portrait's lips at HEAD_SCALE, swaying by 3 px): alone, and beside a shape.
SOLO_MOUTH = (slice(62, 84), slice(60, 95))
JOINT_MOUTH = (slice(66, 81), slice(40, 61))


@pytest.mark.parametrize("variant", ["mp4", "webmvp8"])
def test_visual_tts_mouth_follows_speech(corpus, variant):
    cid = _one(corpus, "visual_tts_", variant)
    path = corpus["root"] / corpus["rows"][cid]["video_path"]
    mouth_area = _mouth_area(_frames(path), *SOLO_MOUTH)
    times = np.arange(len(mouth_area)) / _fps(path)
    sr = 16000
    envelope = _rms_at(_audio(path, sr), sr, times, 0.025)
    assert mouth_area.max() > 20 and (mouth_area == 0).any()
    assert np.corrcoef(mouth_area, envelope)[0, 1] > 0.5


def test_talking_faces_are_found_by_the_packaged_face_detector(corpus):
    from stages.mouth import detect_faces, load_face_detector

    detector = load_face_detector()
    for cid in [c for c in _good(corpus) if c.startswith(("visual_tts_", "joint_"))]:
        frames = _frames(corpus["root"] / corpus["rows"][cid]["video_path"])[::10]
        luma = (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
        found = [len(detect_faces(detector, f)) > 0 for f in luma]
        assert np.mean(found) >= 0.75, cid


def test_the_mouth_closes_in_the_pause_between_phrases(corpus):
    cid = _one(corpus, "visual_tts_", "mkv")
    row = corpus["rows"][cid]
    assert len(row["transcript"].split()) >= 6            # spoken as two phrases (speech.spoken_phrases)
    path = corpus["root"] / row["video_path"]
    fps = _fps(path)
    mouth_area = _mouth_area(_frames(path), *SOLO_MOUTH)
    envelope = _rms_at(_audio(path), 16000, np.arange(len(mouth_area)) / fps, 0.025)
    talking = np.flatnonzero(envelope > 0.1 * envelope.max())
    inside = mouth_area[talking[0]:talking[-1] + 1] == 0  # closed frames between the first and last sound
    run, longest = 0, 0
    for closed in inside:
        run = run + 1 if closed else 0
        longest = max(longest, run)
    assert longest / fps >= 0.2                           # a closed mouth for the pause (0.3 to 0.5 s)


def test_joint_mouth_moves_only_inside_the_speech_span(corpus):
    cid = _one(corpus, "joint_", "mp4")
    row = corpus["rows"][cid]
    path = corpus["root"] / row["video_path"]
    mouth_area = _mouth_area(_frames(path), *JOINT_MOUTH)  # the face sits left of the sound object
    times = np.arange(len(mouth_area)) / _fps(path)
    inside = (times >= row["speech_start_s"]) & (times <= row["speech_end_s"])
    assert mouth_area[~inside].max() == 0
    assert (mouth_area[inside] > 0).mean() > 0.3
