"""The decode stage alone, on the generated corpus's real media (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from stages.base import Reject
from stages.decode import DecodeConfig, DecodeStage, frame_indices_at


@pytest.fixture(scope="module")
def decoded(corpus):
    rows = pq.read_table(corpus.manifest).to_pylist()
    stage = DecodeStage(data_root=str(corpus.root))
    return {r["clip_id"]: r for r in stage(rows)}


def test_every_decode_reject_has_its_reason(corpus, decoded):
    for clip_id, exp in corpus.expected.items():
        row = decoded[clip_id]
        if exp["outcome"] == "reject" and exp["stage"] == "decode":
            assert row["reject_stage"] == "decode", clip_id
            assert row["reject_reason"] == exp["reason"], (clip_id, row["reject_detail"])
        else:
            assert row["reject_reason"] is None, (clip_id, row["reject_reason"], row["reject_detail"])


def test_good_clips_have_the_contract_shapes(corpus, decoded):
    cfg = DecodeConfig()
    for clip_id in corpus.good_ids():
        row = decoded[clip_id]
        d = row["duration_s"]
        assert 0.1 <= d <= cfg.max_seconds
        assert row["audio"].dtype == np.float32 and row["audio"].ndim == 1
        assert len(row["audio"]) == math.floor(d * cfg.sample_rate + 1e-6)
        if row["task"] == "tts":
            assert row["frames"] is None
        else:
            frames = row["frames"]
            assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3)
            assert abs(len(frames) - math.floor(d * cfg.fps)) <= 1, clip_id
        assert np.isfinite(row["audio"]).all()


def test_long_clips_are_cut_and_flagged(corpus, decoded):
    cut = [k for k, v in corpus.expected.items() if v.get("cut")]
    assert cut, "the corpus must hold a clip longer than max_seconds"
    for clip_id in cut:
        row = decoded[clip_id]
        assert row["cut"] is True and row["duration_s"] == pytest.approx(10.0)
        assert len(row["frames"]) == 100


def test_common_span_of_audio_and_video(corpus, decoded):
    """A clip whose audio and video differ in length is their common span; both lengths are recorded."""
    mismatched = [r for r in decoded.values() if r["reject_reason"] is None and r["video_duration_s"]
                  and abs(r["video_duration_s"] - r["audio_duration_s"]) > 0.5]
    assert mismatched, "the corpus must hold a clip whose audio and video lengths differ"
    for row in mismatched:
        assert row["duration_s"] <= min(row["video_duration_s"], row["audio_duration_s"]) + 1e-6


def test_many_channels_and_rates_are_normalised(corpus, decoded):
    """6/8-channel audio and 8-96 kHz rates (in containers and in separate files) all become 16 kHz mono."""
    seen = {(v["channels"], v["sample_rate"]) for k, v in corpus.expected.items() if v["outcome"] == "ok"}
    assert {6, 8} <= {c for c, _ in seen} and {8000, 96000} <= {r for _, r in seen}
    for clip_id in corpus.good_ids():
        row = decoded[clip_id]
        assert row["audio"].ndim == 1 and np.abs(row["audio"]).max() > 0.01, clip_id
    files = [r for r in decoded.values() if r["reject_reason"] is None and r["source_channels"]]
    assert {8000, 96000} <= {r["source_sample_rate"] for r in files}  # separate files report their native rate
    assert 8 in {r["source_channels"] for r in files}


def test_durations_are_the_ones_the_corpus_was_made_with(corpus, decoded):
    """Each clip lasts what its media says: the common span of its audio and video, inside its trim window, cut to
    max_seconds; within one video frame of the generator's own lengths (containers pad or trim the last frame)."""
    cfg = DecodeConfig()
    for clip_id in corpus.good_ids():
        row, made = decoded[clip_id], corpus.expected[clip_id]
        span = min(made["duration_s"], made.get("audio_duration_s") or math.inf)
        if row.get("end_s") is not None:
            span = min(span, row["end_s"]) - (row.get("start_s") or 0.0)
        assert row["duration_s"] == pytest.approx(min(span, cfg.max_seconds), abs=0.04), clip_id


def test_trim_window_starts_the_clip_at_start_s(corpus, decoded):
    """The trimmed clip's first sample is the sample at start_s of the whole file."""
    cfg = DecodeConfig()
    trimmed = [r for r in decoded.values() if r["reject_reason"] is None and r.get("start_s")]
    assert trimmed
    stage = DecodeStage(data_root=str(corpus.root))
    for row in trimmed:
        whole = stage([{**row, "start_s": None, "end_s": None, "reject_reason": None, "reject_stage": None,
                        "reject_detail": None}])[0]
        first = int(round(row["start_s"] * cfg.sample_rate))
        n = len(row["audio"])
        np.testing.assert_allclose(row["audio"], whole["audio"][first:first + n], atol=1e-6,
                                   err_msg=row["clip_id"])
        assert row["duration_s"] <= (row["end_s"] - row["start_s"]) + 1e-6


def test_frames_follow_presentation_times():
    starts = np.array([0.0, 0.04, 0.2, 0.21, 0.5])  # variable frame rate
    times = np.arange(6) / 10
    assert frame_indices_at(times, starts).tolist() == [0, 1, 2, 3, 3, 4]


def test_rotated_video_is_upright(corpus, decoded):
    """decord applies rotation metadata: our first frame matches what a player shows (ffmpeg auto-rotates),
    and not the stored, unrotated picture."""
    import subprocess

    rotated = [k for k, v in corpus.expected.items() if v.get("rotation_deg")]
    assert rotated, "the corpus must hold a rotated clip"
    row = decoded[rotated[0]]
    assert row["reject_reason"] is None
    ours = row["frames"][0].astype(np.float32)  # [224, 224, 3]

    def ffmpeg_frame(*flags):
        cmd = ["ffmpeg", "-v", "error", *flags, "-i", str(corpus.root / row["video_path"]), "-vf", "scale=224:224",
               "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout,
                             np.uint8).reshape(224, 224, 3).astype(np.float32)

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    displayed, stored = ffmpeg_frame(), ffmpeg_frame("-noautorotate")
    assert corr(ours, displayed) > 0.9
    assert corr(ours, displayed) > corr(ours, stored) + 0.1


def test_path_escape_and_missing_file(tmp_path):
    stage = DecodeStage(data_root=str(tmp_path))
    rows = stage([{"clip_id": "a", "task": "tts", "audio_path": "../../etc/passwd"},
                  {"clip_id": "b", "task": "tts", "audio_path": "nope.wav"},
                  {"clip_id": "c", "task": "v2s", "video_path": None, "audio_path": "x.wav"},
                  {"clip_id": "d", "task": "tts"}])
    assert [r["reject_reason"] for r in rows] == ["path_escapes_root", "missing_file", "no_video", "no_audio"]
    assert all(r["reject_stage"] == "decode" for r in rows)


def test_reject_is_an_exception_with_reason():
    r = Reject("too_short", "0.05s")
    assert r.reason == "too_short" and "0.05s" in str(r)
