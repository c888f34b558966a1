"""The speech-span stage alone, on espeak-ng speech written as wav files: spans from word timings, from the
manifest and from silero-vad; long clips moved onto their speech or rejected; no transcript past the audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from pipeline.demo.sample_corpus.encode import find_tools
from pipeline.demo.sample_corpus.speech import SPEECH_RATE, speak
from stages.audio import AudioFeatureStage
from stages.decode import DecodeConfig, DecodeStage
from stages.speech_span import SpeechSpanStage

SENTENCE = "Please bring the red cup to the kitchen, and close the door behind you."


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """{name: (path, [speech start, end] s)}: espeak speech with silence and faint noise around it, 16 kHz wav."""
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    voice = speak(find_tools(), root, SENTENCE, "en-us", 170, 50)
    spoken = len(voice) / SPEECH_RATE

    def clip(name, lead_s, total_s, repeats=1, noise=0.002):
        speech = np.concatenate([voice] * repeats) if repeats else np.zeros(0, np.float32)
        wave = np.zeros(int(total_s * SPEECH_RATE), np.float32)
        a = int(lead_s * SPEECH_RATE)
        wave[a:a + len(speech)] = speech[: len(wave) - a]
        wave += noise * rng.standard_normal(len(wave)).astype(np.float32)
        path = root / f"{name}.wav"
        sf.write(path, wave, SPEECH_RATE, subtype="PCM_16")
        return path.name, [lead_s, min(lead_s + len(speech) / SPEECH_RATE, total_s)]

    return root, spoken, {
        "short": clip("short", 0.8, spoken + 1.6),
        "late": clip("late", 4.5, 14.0),                      # 14 s source, its speech well inside 10 s of it
        "long": clip("long", 0.5, 14.0, repeats=3),           # speech all the way past 10 s
        "noise": clip("noise", 0.0, 3.0, repeats=0, noise=0.1),  # loud, but no voice in it
    }


def run(media, name, **row):
    root, _, clips = media
    config = DecodeConfig()
    stages = [DecodeStage(data_root=str(root), config=config), AudioFeatureStage(),
              SpeechSpanStage(data_root=str(root), decode=config, mel=AudioFeatureStage().mel_config,
                              loudness=AudioFeatureStage().loudness_config)]
    rows = [{"clip_id": name, "task": "tts", "audio_path": clips[name][0], "transcript": SENTENCE, **row}]
    for stage in stages:
        rows = stage(rows)
    return rows[0]


def test_vad_span_of_a_clip_without_one(media):
    row = run(media, "short")
    truth = media[2]["short"][1]
    assert row.get("reject_reason") is None and row["speech_span_source"] == "vad"
    assert abs(row["speech_start_s"] - truth[0]) < 0.15 and abs(row["speech_end_s"] - truth[1]) < 0.15
    assert row["window_source"] is None and not row["cut"]


def test_long_clip_is_moved_onto_its_speech(media):
    row = run(media, "late")
    truth = media[2]["late"][1]
    assert row.get("reject_reason") is None and row["window_source"] == "vad" and not row["cut"]
    assert row["start_s"] <= truth[0] and truth[1] <= row["end_s"] and row["duration_s"] <= 10.0
    assert row["start_s"] <= row["speech_start_s"] < row["speech_end_s"] <= row["start_s"] + row["duration_s"]
    assert len(row["audio"]) == len(row["mel"]) * 160 + len(row["audio"]) % 160  # decoded anew, mel of it


def test_speech_past_max_seconds_is_rejected(media):
    row = run(media, "long")
    assert (row["reject_stage"], row["reject_reason"]) == ("speech_span", "speech_too_long")
    assert "no word timings" in row["reject_detail"]


def test_no_speech_detected(media):
    row = run(media, "noise")
    assert (row["reject_stage"], row["reject_reason"]) == ("speech_span", "no_speech_detected")


def test_word_timings_and_manifest_spans(media):
    truth = media[2]["short"][1]
    words = [{"word": "please", "start_s": truth[0], "end_s": truth[0] + 0.3},
             {"word": "you", "start_s": truth[1] - 0.2, "end_s": truth[1]}]
    row = run(media, "short", words=json.dumps(words))
    assert row["speech_span_source"] == "word_timings" and row["speech_end_s"] == truth[1]
    late = [{"word": "please", "start_s": 1.0, "end_s": 1.3}, {"word": "you", "start_s": 11.0, "end_s": 11.4}]
    row = run(media, "late", words=late)  # words past the 10 s the stored audio holds
    assert (row["reject_reason"], row["cut"]) == ("speech_too_long", True) and "11.40" in row["reject_detail"]
    row = run(media, "short", speech_start_s=0.5, speech_end_s=1.5)
    assert (row["speech_span_source"], row["speech_start_s"]) == ("manifest", 0.5)
    row = run(media, "late", speech_start_s=4.5, speech_end_s=12.0)
    assert row["reject_reason"] == "speech_too_long" and "past the stored audio" in row["reject_detail"]


def test_sound_rows_pass_through(media):
    stage = SpeechSpanStage(data_root=str(media[0]), decode=DecodeConfig(), mel=None, loudness=None)
    (row,) = stage([{"clip_id": "s", "task": "v2s", "duration_s": 2.0, "audio": np.zeros(32000, np.float32)}])
    assert row["reject_reason"] is None and row["speech_span_source"] is None and "speech_start_s" not in row
    (row,) = stage([{"clip_id": "u", "task": "tts", "duration_s": 2.0, "audio": np.zeros(32000, np.float32),
                     "transcript_problem": "a.txt is not valid UTF-8"}])  # left for phonemes: unreadable_transcript
    assert row["reject_reason"] is None and row["speech_span_source"] is None
