"""`pipeline run evaluate` on generated audio of known properties: copies of the references, the sound delayed by
0.4 s, the speech moved 1 s later, the level lowered 6 dB, silence, the same words in the same or another espeak-ng
voice; references from an output folder and from a manifest; WER and a Fréchet distance with tiny local models
(their figures checked against what they compute)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

import pipeline
from pipeline.cli.app import app
from pipeline.evaluate.metrics import frechet_distance, word_error_rate
from tests.stages.test_speaker import speak

SR = 16000


def write(folder: Path, key: str, wave: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{key}.wav", np.asarray(wave, np.float32), SR, subtype="FLOAT")


def later(wave: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    return np.concatenate([np.zeros(n, np.float32), wave[: len(wave) - n]])


@pytest.fixture(scope="module")
def clips(extracted):
    out = pipeline.open_output(extracted[0])
    v2s = [s for s in out.filter(task="v2s") if s.meta["duration_s"] >= 2.5]
    tts = [s for s in out.filter(task="tts") if s.meta["duration_s"] >= 2.5][:2]
    assert len(v2s) >= 6 and len(tts) == 2
    return v2s, tts


@pytest.fixture(scope="module")
def evaluated(extracted, clips, tmp_path_factory):
    """Two generated folders measured against the extract output: exact copies, and altered copies."""
    v2s, tts = clips
    root = tmp_path_factory.mktemp("eval")
    for s in [*v2s, *tts]:
        write(root / "same", s.key, s.audio)
    for s in v2s[:-1]:
        write(root / "altered", s.key, later(s.audio, 0.4))        # the sound 0.4 s after the picture
    write(root / "altered", v2s[-1].key, v2s[-1].audio * 10 ** (-6 / 20))   # 6 dB quieter
    write(root / "altered", tts[0].key, later(tts[0].audio, 1.0))         # the speech 1 s later than asked
    write(root / "altered", tts[1].key, np.zeros_like(tts[1].audio))      # no speech at all
    result = CliRunner().invoke(app, ["run", "evaluate", "--generated", str(root / "same"), "--reference",
                                      str(extracted[0]), "--out", str(root / "same-eval")])
    assert result.exit_code == 0, result.output
    from pipeline.evaluate.run import evaluate

    altered = evaluate(root / "altered", extracted[0], root / "altered-eval")
    rows = pq.read_table(root / "same-eval" / "metrics.parquet").to_pylist()
    return {r["key"]: r for r in rows}, {r["key"]: r for r in altered["rows"]}, root, result.output


def test_copies_of_the_references_measure_as_identical_and_aligned(evaluated, clips):
    same, _, root, printed = evaluated
    v2s, tts = clips
    assert len(same) == len(v2s) + 2
    for row in same.values():
        assert row["mel_distance"] == 0.0 and abs(row["loudness_diff_db"]) < 1e-6
    # the sample corpus's shapes flash on every sound onset; short clips of periodic onsets leave some ambiguous
    offsets = [same[s.key]["av_offset_s"] for s in v2s]
    assert np.median(np.abs(offsets)) <= 0.06 and sum(abs(o) <= 0.06 for o in offsets) > len(v2s) / 2, offsets
    for s in tts:
        assert same[s.key]["span_iou"] >= 0.8 and same[s.key]["av_offset_s"] is None
        assert same[s.key]["speaker_similarity"] > 0.99 and same[s.key]["note"] is None
    assert all(same[s.key]["speaker_similarity"] is None for s in v2s)        # sound clips have no speaker
    summary = json.loads((root / "same-eval" / "summary.json").read_text())
    assert summary["clips"] == len(same) and summary["metrics"]["mel_distance"] == {"mean": 0.0, "clips": len(same)}
    assert summary["metrics"]["speaker_similarity"]["clips"] == 2
    assert summary["metrics"]["speaker_similarity"]["mean"] > 0.99
    assert not any("speaker" in n for n in summary["notes"])                  # nothing about it was skipped
    assert (root / "same-eval" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mel_distance" in printed and "speaker_similarity" in printed


def test_altered_audio_moves_each_figure_by_what_was_done(evaluated, clips):
    same, altered, _, _ = evaluated
    v2s, tts = clips
    delayed = [altered[s.key]["av_offset_s"] for s in v2s[:-1]]
    assert abs(np.median(delayed) - 0.4) <= 0.06 and sum(abs(o - 0.4) <= 0.06 for o in delayed) > len(delayed) / 2, \
        delayed
    quiet = altered[v2s[-1].key]
    assert abs(quiet["loudness_diff_db"] + 6.0) < 0.05
    assert 0.2 < quiet["mel_distance"] <= math.log(2) + 1e-3    # ln 2 where above the log floor, 0 where at it
    moved = altered[tts[0].key]
    assert abs(moved["span_start_error_s"] - 1.0) <= 0.1 and moved["span_iou"] < same[tts[0].key]["span_iou"]
    assert altered[tts[1].key]["span_iou"] == 0.0 and altered[tts[1].key]["loudness_lufs"] is None


def test_a_silent_generated_speech_clip_has_no_speaker_similarity_and_says_why(evaluated, clips):
    _, altered, root, _ = evaluated
    v2s, tts = clips
    silent = altered[tts[1].key]
    assert silent["speaker_similarity"] is None
    assert silent["note"].startswith("speaker similarity not measured: the generated span ") and \
        "no_voice: the speech span" in silent["note"] and "is silent" in silent["note"], silent["note"]
    assert altered[tts[0].key]["speaker_similarity"] is not None          # the run went on past it
    assert len(altered) == len(v2s) + 2
    summary = json.loads((root / "altered-eval" / "summary.json").read_text())
    assert summary["metrics"]["speaker_similarity"]["clips"] == 1
    assert any(n.startswith(f"speaker similarity not measured for 1 speech clip(s) ({tts[1].key})")
               for n in summary["notes"]), summary["notes"]
    stored = {r["key"]: r for r in pq.read_table(root / "altered-eval" / "metrics.parquet").to_pylist()}
    assert stored[tts[1].key]["speaker_similarity"] is None and stored[tts[1].key]["note"] == silent["note"]


def test_another_voice_scores_clearly_lower_than_the_same_voice(clips, extracted, tmp_path, one_torch_thread):
    """The reference's words spoken again by espeak-ng, in its own voice and in one of another timbre, laid where
    its speech span starts: only the voice differs between the two runs."""
    from pipeline.evaluate.run import evaluate

    _, tts = clips
    for s in tts:
        voice = s.meta["speaker"]
        other = "en+m3" if voice == "en+f3" else "en+f3"      # corpus voices: en-us, en-gb, en+m3 male, en+f3 female
        start = int(s.meta["speech_span_s"][0] * SR)
        for folder, v in (("same", voice), ("other", other)):
            speech = speak(tmp_path, v, s.meta["transcript"])[: len(s.audio) - start]
            wave = np.zeros_like(s.audio)
            wave[start:start + len(speech)] = speech
            write(tmp_path / folder, s.key, wave)
    scores = {folder: {r["key"]: r["speaker_similarity"] for r in evaluate(tmp_path / folder, extracted[0],
                                                                           tmp_path / f"{folder}-eval")["rows"]}
              for folder in ("same", "other")}
    # Measured on the 14 speech clips of the sample corpus: the same voice 0.74..0.97, another 0.58..0.71, the
    # same beating the other by 0.08..0.36 on each clip (0.29 and 0.36 on these two).
    for s in tts:
        same, other = scores["same"][s.key], scores["other"][s.key]
        assert same - other > 0.15 and same > 0.8, (s.key, same, other)


def test_a_manifest_reference_is_decoded_as_extract_would_store_it(corpus, clips, tmp_path):
    v2s, _ = clips
    for s in v2s[:3]:
        write(tmp_path / "gen", s.key, s.audio)
    from pipeline.evaluate.run import evaluate

    result = evaluate(tmp_path / "gen", corpus.manifest, tmp_path / "eval", data_root=corpus.root)
    assert len(result["rows"]) == 3 and all(row["mel_distance"] == 0.0 for row in result["rows"])
    offsets = [row["av_offset_s"] for row in result["rows"]]   # motion from the decoded frames this time
    assert sum(abs(o) <= 0.06 for o in offsets) >= 2, offsets
    result = CliRunner().invoke(app, ["run", "evaluate", "--generated", str(tmp_path / "gen"), "--reference",
                                      str(corpus.manifest), "--out", str(tmp_path / "e2")])
    assert result.exit_code == 2 and "give --data-root" in result.output


@pytest.fixture(scope="module")
def tiny_audio_models(tmp_path_factory):
    """A tiny random wav2vec2 CTC recogniser (with its tokenizer) and a tiny random wav2vec2 encoder."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Model,
        Wav2Vec2Processor,
    )

    root = tmp_path_factory.mktemp("audio-models")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate("abcdefghijklmno")}}
    (root / "vocab.json").write_text(json.dumps(vocab))
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True)
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2, vocab_size=len(vocab), pad_token_id=0)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(root / "asr")
    Wav2Vec2Processor(feature_extractor=features,
                      tokenizer=Wav2Vec2CTCTokenizer(str(root / "vocab.json"))).save_pretrained(root / "asr")
    Wav2Vec2Model(config).save_pretrained(root / "encoder")
    features.save_pretrained(root / "encoder")
    return root / "asr", root / "encoder"


def test_wer_and_frechet_distance_with_local_models(clips, extracted, tiny_audio_models, tmp_path):
    from pipeline.evaluate.models import AudioEmbedder
    from pipeline.evaluate.run import evaluate

    asr, encoder = tiny_audio_models
    v2s, tts = clips
    for s in [*tts, *v2s[:2]]:
        write(tmp_path / "gen", s.key, s.audio)
    result = evaluate(tmp_path / "gen", extracted[0], tmp_path / "eval", asr_model=asr, embedding_model=encoder)
    for s in tts:   # a random recogniser says nonsense: the WER is what jiwer makes of exactly that nonsense
        row = next(r for r in result["rows"] if r["key"] == s.key)
        assert row["wer"] == word_error_rate(s.meta["transcript"], row["hypothesis"]) and row["wer"] > 0
    assert abs(result["frechet_distance"]) < 1e-3     # the same clips on both sides
    embed = AudioEmbedder(encoder)
    rng = np.random.default_rng(0)
    noise = np.stack([embed(0.3 * rng.standard_normal(SR * 2).astype(np.float32)) for _ in range(4)])
    refs = np.stack([embed(s.audio) for s in [*tts, *v2s[:2]]])
    assert frechet_distance(noise, refs) > 1e-2


def test_the_figures_themselves_on_known_inputs():
    assert word_error_rate("Hello, world!", "hello word") == 0.5 and word_error_rate("It's ok.", "it's ok") == 0.0
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    shift = np.array([1.0, 2.0, 0.0])
    assert abs(frechet_distance(a, a + shift) - 5.0) < 0.05      # same covariance: ||mu_a - mu_b||^2
    assert abs(frechet_distance(a, 2 * a) - 3.0) < 0.15          # Tr(I + 4I - 2*2I) = 3 for unit covariance
