"""generate with the time-sensitive conditions (issue 11, item 6): the lip stream from the input video by extract's
own stages (to the bit), --no-lip, --speaker-ref embedded as extract embeds speech, and their refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.generate import GenerateError, extract_conditions, generate, load_model
from model.generate_conditions import conditions_batch, model_conditions
from model.train import run_pretrain
from model.train_config import TrainConfig
from stages.format.contract import FeatureContract
from stages.format.shard_io import iter_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TALK = "visual_tts_enm3_mp4_000"
TEXT = "Please bring the red cup."


@pytest.fixture(scope="module")
def trained(extracted, tmp_path_factory) -> Path:
    """A tiny model built for every condition the extract carries (lip crops and the speaker token), a few steps."""
    out, _ = extracted
    run = tmp_path_factory.mktemp("streams_run")
    cfg = TrainConfig(preset="tiny", batch_size=4, steps=4, warmup_steps=1, lr=1e-3, num_workers=0, log_every=2,
                      eval_every=1000, save_every=1000, val_samples=0)
    run_pretrain([out], run, cfg)
    return run / "ckpt" / "last.pt"


@pytest.fixture(scope="module")
def rows(corpus) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(corpus.manifest).to_pylist()}


@pytest.fixture(scope="module")
def voice(corpus, rows) -> Path:
    """A 16 kHz speech recording of the corpus (no resampling between it and the embedding)."""
    return corpus.root / rows["tts_enm3_wav16kf32_000"]["audio_path"]


def test_the_model_takes_lip_and_speaker(trained):
    model, _ = load_model(trained)
    assert "lip" in model.cfg.streams and model.cfg.ref_token


def test_the_lip_stream_equals_what_extract_stored_for_the_clip(trained, extracted, corpus, rows):
    out, _ = extracted
    contract = FeatureContract.from_dict(load_model(trained)[1]["contract"])
    stored = next(s for s in iter_samples(sorted((out / "shards").glob("*.tar"))) if s["key"] == TALK)["arrays"]
    conds = extract_conditions(contract, corpus.root / rows[TALK]["video_path"], transcript=TEXT, streams=("lip",))
    lip = conds["streams"]["lip"]
    assert lip["rows"].dtype == stored["lip"].dtype == np.uint8 and lip["rows"].shape[1:] == (88, 88)
    np.testing.assert_array_equal(lip["rows"], stored["lip"])
    np.testing.assert_array_equal(lip["valid"], stored["lip_valid"])
    assert stored["lip_valid"].any()

    v2s = extract_conditions(contract, corpus.root / rows["v2s_bluetriangle_mp4_000"]["video_path"],
                             streams=("lip",))
    assert v2s["streams"]["lip"]["rows"] is None          # extract gives no mouth stream to V2S: masked, as trained


def test_the_stream_is_resampled_to_the_audio_frames_and_no_lip_masks_it(trained, corpus, rows):
    model, ckpt = load_model(trained)
    contract = FeatureContract.from_dict(ckpt["contract"])
    conds = extract_conditions(contract, corpus.root / rows[TALK]["video_path"], transcript=TEXT, streams=("lip",))
    batch = conditions_batch(conds, model.cfg, contract.mel_config().hop_length)
    mask = batch["stream_masks"]["lip"][0]
    T = batch["audio_mask"].shape[1]
    assert batch["streams"]["lip"].shape == (1, T, 88, 88) and mask.shape == (T,)
    assert mask.sum() == min(T, int(conds["streams"]["lip"]["valid"].sum()))   # lip at 25/s = the audio frames
    assert not batch["ref_mask"].any()                                          # no reference: the token masked
    cond = model_conditions(batch, use_lip=False, device=torch.device("cpu"))
    assert not cond["stream_masks"]["lip"].any() and torch.equal(cond["streams"]["lip"], batch["streams"]["lip"])

    video = corpus.root / rows[TALK]["video_path"]
    with_lips, info = generate(trained, video, transcript=TEXT, steps=2)
    without, info_off = generate(trained, video, transcript=TEXT, steps=2, use_lip=False)
    assert not np.array_equal(with_lips, without)
    assert info["conditions"]["lip"]["used"] and info["conditions"]["lip"]["valid_frames"] == int(mask.sum())
    assert info_off["conditions"]["lip"] == {"used": False, "why": "--no-lip (masked)",
                                             "valid_frames": int(mask.sum()), "frames": T}
    assert info["conditions"]["speaker"] == {"used": False, "why": "no --speaker-ref (masked)"}


def test_speaker_ref_is_embedded_as_extract_embeds_speech(trained, corpus, rows, voice):
    from stages.audio import LoudnessConfig, normalize_loudness, quantize_pcm16
    from stages.speaker import SpeakerStage

    contract = FeatureContract.from_dict(load_model(trained)[1]["contract"])
    wave, rate = sf.read(voice, dtype="float32")
    assert rate == contract.sample_rate
    stored = quantize_pcm16(normalize_loudness(wave, rate, LoudnessConfig(**contract.loudness))[0])
    stage = SpeakerStage()
    stage.setup()
    expected = stage.embed(stored)
    conds = extract_conditions(contract, None, transcript=TEXT, duration=1.0, speaker_ref=voice)
    assert conds["speaker"].dtype == np.float32 and np.array_equal(conds["speaker"], expected)

    video = corpus.root / rows[TALK]["video_path"]
    plain, _ = generate(trained, video, transcript=TEXT, steps=2)
    voiced, info = generate(trained, video, transcript=TEXT, steps=2, speaker_ref=voice)
    assert not np.array_equal(plain, voiced)
    assert info["conditions"]["speaker"] == {"used": True, "file": str(voice)}


def test_a_silent_reference_and_a_speakerless_checkpoint_are_refused_by_the_cli(trained, corpus, rows, voice,
                                                                                  tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(GenerateError, match="has no voice"):
        generate(trained, None, transcript=TEXT, duration=1.0, steps=1, speaker_ref=silent)

    ckpt = load_checkpoint(trained)                  # the same network built without the speaker token
    ckpt["model_config"]["ref_token"] = False
    for weights in (ckpt["model"], ckpt["ema"]["weights"]):
        for key in [k for k in weights if k.startswith("ref_proj.")]:
            del weights[key]
    save_checkpoint(ckpt, tmp_path / "no-speaker.pt")

    video = str(corpus.root / rows[TALK]["video_path"])
    for ckpt_path, ref, message in ((trained, silent, "has no voice to embed"),
                                    (tmp_path / "no-speaker.pt", voice, "takes no speaker reference")):
        result = CliRunner().invoke(app, ["run", "generate", "--ckpt", str(ckpt_path), "--video", video,
                                          "--transcript", TEXT, "--speaker-ref", str(ref), "--steps", "1",
                                          "--out", str(tmp_path / "o.wav")], terminal_width=200)
        flat = " ".join(result.output.split())
        assert result.exit_code == 1 and message in flat and "Traceback" not in flat, result.output


def test_generate_batch_passes_the_reference_and_no_lip_through(trained, corpus, rows, voice, tmp_path):
    from typer.testing import CliRunner

    from manifests.schema import Clip, write_manifest
    from pipeline.cli.app import app

    talk = rows[TALK]
    manifest = write_manifest([Clip(clip_id=TALK, task="visual_tts", video_path=talk["video_path"], transcript=TEXT)],
                              tmp_path / "m.parquet")
    result = CliRunner().invoke(app, ["run", "generate-batch", "--ckpt", str(trained), "--manifest", str(manifest),
                                      "--data-root", str(corpus.root), "--out", str(tmp_path / "gen"), "--steps", "2",
                                      "--speaker-ref", str(voice), "--no-lip"], terminal_width=200)
    assert result.exit_code == 0 and "1 generated" in result.output, result.output
    alone, info = generate(trained, corpus.root / talk["video_path"], transcript=TEXT, steps=2, speaker_ref=voice,
                           use_lip=False)
    made, _ = sf.read(tmp_path / "gen" / f"{TALK}.wav", dtype="float32")
    sf.write(tmp_path / "alone.wav", np.clip(alone, -1, 1), 16000, subtype="PCM_16")
    assert np.array_equal(made, sf.read(tmp_path / "alone.wav", dtype="float32")[0])
    assert not info["conditions"]["lip"]["used"] and info["conditions"]["speaker"]["used"]
