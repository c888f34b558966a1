"""The mixing stage alone on real extracted samples: SNR, loudness, mel, visual modes, spans, rejects."""

from __future__ import annotations

import collections
import math
from dataclasses import replace

import numpy as np
import pytest

from stages.audio import LogMel, LoudnessConfig, MelConfig, decode_flac, measure_loudness
from stages.mix import MixConfig, MixRecipe, MixStage, pick_sources, render_mixture, sample_recipe

FPS = 10.0


def recipe_for(speech, sound, mode, offset_s=None, snr_db=6.0):
    r = sample_recipe(seed=0, index=0, speech=speech, sound=sound, config=MixConfig(), video_fps=FPS)
    return replace(r, mode=mode, snr_db=snr_db, offset_s=r.offset_s if offset_s is None else offset_s)


def render(recipe, load, speech, sound):
    return render_mixture(recipe, load(speech), load(sound), logmel=LogMel(MelConfig()), loudness=LoudnessConfig(),
                          video_fps=FPS)


def pair(by_task, longer_sound=True):
    for sp in by_task["visual_tts"]:
        for so in by_task["v2s"]:
            if (so["duration_s"] > sp["duration_s"] + 0.5) == longer_sound and not so["silent"]:
                return sp, so
    raise AssertionError("no such pair in the corpus")


def test_sources_are_used_as_evenly_as_counts_allow():
    uses = collections.Counter(pick_sources(3, i, 5, 7)[0] for i in range(12))
    assert set(uses) == set(range(5)) and max(uses.values()) - min(uses.values()) <= 1
    assert [pick_sources(3, i, 5, 7) for i in range(12)] == [pick_sources(3, i, 5, 7) for i in range(12)]


def test_recipes_are_seeded_on_the_grid_and_respect_tts(sources):
    by_task, _ = sources
    sp, so = pair(by_task)
    recipes = [sample_recipe(seed=1, index=i, speech=sp, sound=so, config=MixConfig(), video_fps=FPS) for i in range(40)]
    assert recipes == [sample_recipe(seed=1, index=i, speech=sp, sound=so, config=MixConfig(), video_fps=FPS)
                       for i in range(40)]
    for r in recipes:
        assert 0 <= r.offset_s <= so["duration_s"] - sp["duration_s"] + 1e-9
        assert abs(r.offset_s * FPS - round(r.offset_s * FPS)) < 1e-9
        assert 0 <= r.snr_db <= 15
    assert {r.mode for r in recipes} == {"add", "insert", "sound_only"}
    tts = by_task["tts"][0]
    assert {sample_recipe(seed=1, index=i, speech=tts, sound=so, config=MixConfig(), video_fps=FPS).mode
            for i in range(20)} == {"sound_only"}


@pytest.mark.parametrize("snr_db", [0.0, 7.5, 15.0])
def test_measured_snr_loudness_and_no_clipping(sources, snr_db):
    """The SNR is measured on the stored audio: the speech source, placed at its offset and scaled by the mix's
    gain, is subtracted from the decoded mixture; what is left is the sound. Their loudness differ by the SNR."""
    by_task, load = sources
    sp, so = pair(by_task)
    recipe = recipe_for(sp, so, "sound_only", snr_db=snr_db)
    out = render(recipe, load, sp, so)
    meta = __import__("json").loads(out["meta_json"])
    mixture, rate = decode_flac(out["flac"])                       # what the shard holds
    speech_wave, _ = decode_flac(load(sp)["flac"])
    offset = int(round(recipe.offset_s * rate))
    speech_part = np.zeros_like(mixture)
    speech_part[offset:offset + len(speech_wave)] = speech_wave[:len(mixture) - offset]
    speech_part *= 10 ** (meta["recipe"]["mix_gain_db"] / 20)
    sound_part = mixture - speech_part
    measured = measure_loudness(speech_part, rate) - measure_loudness(sound_part, rate)
    assert abs(measured - snr_db) < 0.5, measured
    wave, rate = decode_flac(out["flac"])
    assert rate == 16000 and np.array_equal(wave, out["audio"])
    if not meta["peak_limited"]:
        assert abs(measure_loudness(wave, 16000) - (-23.0)) < 0.5
    assert np.abs(wave).max() <= 10 ** (-1 / 20) + 1e-4  # peaks under -1 dBFS: no clipping


def test_mel_is_the_extract_mel_of_the_mixed_wave(sources):
    by_task, load = sources
    sp, so = pair(by_task)
    out = render(recipe_for(sp, so, "add"), load, sp, so)
    wave, _ = decode_flac(out["flac"])
    assert np.array_equal(out["mel"], LogMel(MelConfig())(wave).astype(np.float16))
    assert len(out["mel"]) == math.floor(out["duration_s"] * 100 + 1e-6)


@pytest.mark.parametrize("mode", ["add", "insert", "sound_only"])
def test_visual_features_follow_the_recipe(sources, mode):
    by_task, load = sources
    sp, so = pair(by_task)
    recipe = recipe_for(sp, so, mode, offset_s=0.5)
    out = render(recipe, load, sp, so)
    sound_video = load(so)["arrays"]["video"].astype(np.float32)
    speech_video = load(sp)["arrays"]["video"].astype(np.float32)
    video = out["video"].astype(np.float32)
    assert video.shape[0] == math.floor(out["duration_s"] * FPS + 1e-6)
    start, k = 5, len(speech_video)
    outside = np.r_[0:start, start + k:len(video)]
    np.testing.assert_array_equal(video[outside], sound_video[outside])
    expected = {"add": (sound_video[start:start + k] + speech_video).astype(np.float16).astype(np.float32),
                "insert": speech_video, "sound_only": sound_video[start:start + k]}[mode]
    np.testing.assert_array_equal(video[start:start + k], expected)


def test_speech_span_moves_with_the_offset_and_phones_are_kept(sources):
    import json

    by_task, load = sources
    sp, so = pair(by_task)
    out = render(recipe_for(sp, so, "insert", offset_s=0.7), load, sp, so)
    meta = json.loads(out["meta_json"])
    a, b = load(sp)["meta"]["speech_span_s"]
    assert meta["speech_span_s"] == pytest.approx([0.7 + a, 0.7 + b])
    assert np.array_equal(out["phone_ids"], load(sp)["arrays"]["phones"])
    assert meta["task"] == "joint" and meta["transcript"] == load(sp)["meta"]["transcript"]


def test_speech_longer_than_sound_repeats_the_sound(sources):
    import json

    by_task, load = sources
    so = min((r for r in by_task["v2s"] if not r["silent"]), key=lambda r: r["duration_s"])
    sp = max(by_task["visual_tts"], key=lambda r: r["duration_s"])
    assert sp["duration_s"] > so["duration_s"]
    recipe = sample_recipe(seed=0, index=0, speech=sp, sound=so, config=MixConfig(), video_fps=FPS)
    assert recipe.offset_s == 0
    out = render(recipe, load, sp, so)
    assert out["duration_s"] == pytest.approx(sp["duration_s"], abs=1e-4)
    assert json.loads(out["meta_json"])["recipe"]["sound_repeats"] >= 2


def test_missing_and_broken_sources_are_rejects(sources, tmp_path):
    by_task, _ = sources
    sp, so = pair(by_task)
    good = recipe_for(sp, so, "add").to_dict()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(open(so["shard"], "rb").read()[:3000])
    rows = MixStage(mel=MelConfig(), loudness=LoudnessConfig(), video_fps=FPS)([
        {**good, "speech_key": "nope"},
        {**good, "sound_shard": str(tmp_path / "gone.tar")},
        {**good, "sound_shard": str(broken)},
        dict(good),
    ])
    assert [r["reject_reason"] for r in rows] == ["missing_source", "missing_source", "broken_source", None]
    assert rows[3]["mel"].dtype == np.float16


def test_recipe_round_trip():
    r = MixRecipe(key="mix_s0_000000001", seed=0, index=1, speech_key="a", speech_shard="/x.tar", sound_key="b",
                  sound_shard="/y.tar", offset_s=0.3, snr_db=4.0, mode="add")
    assert MixRecipe.from_dict({**r.to_dict(), "extra": 1}) == r
    with pytest.raises(ValueError):
        MixRecipe.from_dict({**r.to_dict(), "schema_version": 99})
