"""Mixtures carry the time-sensitive conditions: lip over the speech span, sync like CLIP, the speaker's reference;
`insert` replaces the sound's audio under the speech span (recipes of version 2 only)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stages.audio import LogMel, LoudnessConfig, MelConfig, decode_flac
from stages.format.contract import read_dataset_json
from stages.mix import render_mixture
from stages.mix_streams import mix_sync, speech_mask
from tests.stages.test_mix import FPS, pair, recipe_for


@pytest.fixture(scope="module")
def contract(extracted):
    return read_dataset_json(extracted[0])[0]


def render(recipe, load, speech, sound, contract):
    return render_mixture(recipe, load(speech), load(sound), logmel=LogMel(MelConfig()), loudness=LoudnessConfig(),
                          video_fps=FPS, streams=contract.streams, speaker=contract.speaker)


def test_lip_sits_over_the_speech_span_and_the_speaker_is_the_speechs(sources, contract):
    by_task, load = sources
    sp, so = pair(by_task)
    recipe = recipe_for(sp, so, "add", offset_s=0.3)
    out = render(recipe, load, sp, so, contract)
    speech = load(sp)
    lip, valid = out["lip"], out["lip_valid"]
    assert lip.dtype == np.uint8 and len(lip) == len(valid) == int(np.floor(out["duration_s"] * 25 + 1e-6))
    a, b = speech["meta"]["speech_span_s"]
    t = np.arange(len(lip)) / 25 - recipe.offset_s            # speech-source time of every mixture row
    inside = (t >= a) & (t < b)
    j = np.floor(t[inside] * 25 + 1e-6).astype(int)
    assert np.array_equal(lip[inside], speech["arrays"]["lip"][j])
    assert np.array_equal(valid[inside], speech["arrays"]["lip_valid"][j])
    assert not valid[~inside].any() and not lip[~inside].any()  # masked elsewhere
    assert np.array_equal(out["speaker_ref"], speech["arrays"]["speaker"])


def test_tts_speech_gives_a_fully_masked_lip_stream(sources, contract):
    by_task, load = sources
    _, so = pair(by_task)
    tts = next(r for r in by_task["tts"] if r["duration_s"] < so["duration_s"])
    out = render(recipe_for(tts, so, "sound_only"), load, tts, so, contract)
    assert len(out["lip"]) > 0 and not out["lip_valid"].any() and not out["lip"].any()


def speech_fit_residual(out, speech_flac, offset_s, span, shrink=0.03) -> float:
    """Share of the mixture's energy inside the speech span (less `shrink` at each edge) that the speech, at its
    best gain, does not explain: ~0 where the speech replaced the sound."""
    mixed, rate = decode_flac(out["flac"])
    speech, _ = decode_flac(speech_flac)
    a, b = int((offset_s + span[0] + shrink) * rate), int((offset_s + span[1] - shrink) * rate)
    m = mixed[a:b].astype(np.float64)
    s = speech[a - int(round(offset_s * rate)):b - int(round(offset_s * rate))].astype(np.float64)
    gain = (m @ s) / (s @ s)
    return float(np.sum((m - gain * s) ** 2) / np.sum(m ** 2))


def test_insert_replaces_the_sound_under_the_speech_span(sources, contract):
    by_task, load = sources
    sp, so = pair(by_task)
    speech = load(sp)
    span = speech["meta"]["speech_span_s"]
    insert = recipe_for(sp, so, "insert", offset_s=0.3, snr_db=0.0)
    replaced = speech_fit_residual(render(insert, load, sp, so, contract), speech["flac"], 0.3, span)
    added = speech_fit_residual(render(replace(insert, mode="add"), load, sp, so, contract), speech["flac"], 0.3,
                                span)
    assert replaced < 1e-3 < 0.1 < added                     # only quantisation is left where the speech replaced


def test_version_1_insert_recipes_render_as_they_always_did(sources, contract):
    """Before version 2, `insert` replaced only the visual rows: the audio equals an `add` mixture's."""
    by_task, load = sources
    sp, so = pair(by_task)
    old_insert = replace(recipe_for(sp, so, "insert", offset_s=0.3), schema_version=1)
    old_add = replace(old_insert, mode="add")
    assert render(old_insert, load, sp, so, contract)["flac"] == render(old_add, load, sp, so, contract)["flac"]
    new_insert = replace(old_insert, schema_version=2)
    assert render(new_insert, load, sp, so, contract)["flac"] != render(old_insert, load, sp, so, contract)["flac"]


def test_speech_mask_ramps_inside_the_span():
    m = speech_mask(16000, 16000, 0.25, 0.75)
    assert m[:4000].min() == 1.0 and m[int(0.26 * 16000):int(0.74 * 16000)].max() == 0.0 and m[12000:].min() == 1.0
    assert 0 < m[4080] < 1                                   # 5 ms into the 10 ms ramp


def test_sync_is_added_or_inserted_like_the_clip_stream():
    stream = {"fps": 25.0, "frame_shape": [2], "dtype": "float16", "region": "frame", "valid": False}
    sound = {"key": "so", "meta": {"duration_s": 1.0}, "arrays": {"sync": np.full((25, 2), 1.0, np.float16)}}
    speech = {"key": "sp", "meta": {"duration_s": 0.4}, "arrays": {"sync": np.full((10, 2), 2.0, np.float16)}}
    added = mix_sync(speech, sound, "sync", stream, "add", offset_s=0.2, duration_s=1.6)
    assert added.shape == (40, 2) and added.dtype == np.float16
    assert added[:5, 0].tolist() == [1.0] * 5 and added[5:15, 0].tolist() == [3.0] * 10
    assert added[15:, 0].tolist() == [1.0] * 25              # the sound repeats past its end
    inserted = mix_sync(speech, sound, "sync", stream, "insert", offset_s=0.2, duration_s=1.6)
    assert inserted[5:15, 0].tolist() == [2.0] * 10
    kept = mix_sync(speech, sound, "sync", stream, "sound_only", offset_s=0.2, duration_s=1.6)
    assert kept[:, 0].tolist() == [1.0] * 40
