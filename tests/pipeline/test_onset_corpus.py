"""The onset corpus (pipeline/demo/sample_corpus/onset.py): what its files hold is what expected.json says, and the
measures the learning test applies to generated audio read the truth back from the real audio."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.demo.sample_corpus.draw import HEIGHT, WIDTH
from pipeline.demo.sample_corpus.onset import (
    BACKGROUND,
    HELD_OUT_ONSETS_S,
    TRAIN_ONSETS_S,
    make_onset_corpus,
    onset_energy_ratio,
    pitch_class,
    plan_onset_clips,
)
from pipeline.demo.sample_corpus.plan import SOUND_CLASSES

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt or scripts/setup.sh)")


def decoded(path, *args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *args, "-"], capture_output=True,
                          check=True).stdout


def test_plan_is_a_pure_function_with_held_out_onsets_where_the_marginal_is_flat():
    plan = plan_onset_clips(clips=42, held_out=6, seed=0)
    assert plan == plan_onset_clips(clips=42, held_out=6, seed=0) != plan_onset_clips(clips=42, held_out=6, seed=1)
    test = [p for p in plan if p["split"] == "test"]
    assert len(test) == 6 and {p["sound"] for p in test} == {"redcircle", "greensquare", "bluetriangle"}
    assert all(HELD_OUT_ONSETS_S[0] <= p["onset_s"] <= HELD_OUT_ONSETS_S[1] for p in test)
    assert all(TRAIN_ONSETS_S[0] <= p["onset_s"] <= TRAIN_ONSETS_S[1] for p in plan if p["split"] == "train")
    with pytest.raises(ValueError, match="held_out"):
        plan_onset_clips(clips=4, held_out=4, seed=0)


def test_the_shape_and_its_tone_start_and_end_together(tmp_path):
    manifest = make_onset_corpus(tmp_path, clips=6, held_out=3)
    expected = json.loads((tmp_path / "expected.json").read_text())
    rows = pq.read_table(manifest).to_pylist()
    assert [r["clip_id"] for r in rows] == sorted(expected, key=lambda k: int(k.rsplit("_", 1)[1]))
    for row in rows:
        truth, path = expected[row["clip_id"]], tmp_path / row["video_path"]
        assert row["task"] == "v2s" and row["split"] == truth["split"]
        wave = np.frombuffer(decoded(path, "-ac", "1", "-ar", "16000", "-f", "f32le"), np.float32)
        assert pitch_class(wave, 16000, truth["onset_s"] + 0.05, truth["end_s"] - 0.05) == truth["sound_class"]
        assert onset_energy_ratio(wave, 16000, truth["onset_s"]) > 1000          # room tone before, the tone after
        frames = np.frombuffer(decoded(path, "-f", "rawvideo", "-pix_fmt", "rgb24"), np.uint8)
        frames = frames.reshape(-1, HEIGHT, WIDTH, 3).astype(np.int16)          # 25 fps
        colour = np.array(SOUND_CLASSES[truth["sound_class"]].rgb)
        shown = [(np.abs(f - colour).sum(-1) < 60).mean() for f in frames]      # share of pixels in the colour
        times = np.arange(len(frames)) / 25
        inside = (times > truth["onset_s"] + 0.05) & (times < truth["end_s"] - 0.05)
        outside = (times < truth["onset_s"] - 0.05) | (times > truth["end_s"] + 0.05)
        assert min(np.array(shown)[inside]) > 0.08 and max(np.array(shown)[outside]) == 0
        assert np.abs(frames[0] - np.array(BACKGROUND)).max() < 12               # the empty background (codec noise)
