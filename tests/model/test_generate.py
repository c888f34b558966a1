"""Generation from a trained checkpoint: conditions by the extract stages, sampling, both vocoders, contract checks."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from model.batch import collate
from model.checkpoint import load_checkpoint, save_checkpoint
from model.generate import (
    GenerateError,
    _ffmpeg,
    conditions_batch,
    extract_conditions,
    generate,
    load_model,
    sample_audio,
    write_wav,
)
from model.train import run_pretrain
from model.train_config import TrainConfig
from model.vocoder import VocoderError, make_tiny_vocoder
from stages.audio import MelConfig
from stages.format.contract import ContractError, FeatureContract, read_dataset_json
from stages.format.shard_io import iter_samples
from stages.model_dir import ModelDirError
from tests.shard_tools import with_latents

SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(extracted, tmp_path_factory) -> Path:
    """A tiny model trained a few steps on the extracted corpus (enough to exercise generation, not to sound good)."""
    out, _ = extracted
    run = tmp_path_factory.mktemp("gen_run")
    cfg = TrainConfig(preset="tiny", batch_size=4, steps=10, warmup_steps=2, lr=1e-3, num_workers=0, log_every=5,
                      eval_every=1000, save_every=1000, ema_decay=0.9, val_samples=0)
    run_pretrain([out], run, cfg)
    return run / "ckpt" / "last.pt"


@pytest.fixture(scope="module")
def media(corpus) -> dict[str, Path]:
    rows = pq.read_table(corpus.manifest).to_pylist()
    return {r["clip_id"]: corpus.root / r["video_path"] for r in rows if r.get("video_path")}


def extracted_row(extracted, key: str) -> dict:
    out, _ = extracted
    return next(r for r in pq.read_table(out / "index.parquet").to_pylist() if r["key"] == key)


def test_v2s_with_griffin_lim_gives_the_video_length(trained, media, extracted):
    key = "v2s_bluetriangle_mp4_000"
    wave, info = generate(trained, media[key], steps=4)
    row = extracted_row(extracted, key)
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    assert len(wave) == round(row["duration_s"] * SR) == info["n_samples"]
    assert info["task"] == "v2s" and info["video_frames"] == row["n_video"]        # same frames as extract saw
    assert info["nfe"] == 4 and info["solver"] == {"method": "euler", "nfe": 4, "steps": 4}
    assert info["vocoder"]["name"] == "griffin-lim" and info["ema"] and info["checkpoint_step"] == 10
    assert info["weights"]["kind"] == "ema" and info["weights"]["ema"]["updates"] == 10
    assert info["weights"]["description"].startswith("EMA over 10 steps: 90% of its weight from the last")
    assert np.abs(wave).max() > 0


def test_visual_tts_with_a_tiny_hifigan_and_a_speech_span(trained, media, extracted, tiny_vocoder):
    key = "visual_tts_enm3_mp4_000"
    wave, info = generate(trained, media[key], transcript="Please bring the red cup.", speech_span=(0.5, 2.0),
                          steps=2, method="heun", guidance=2.0, vocoder_dir=tiny_vocoder, seed=3)
    assert len(wave) == round(extracted_row(extracted, key)["duration_s"] * SR) and np.isfinite(wave).all()
    assert info["vocoder"] == {"name": "hifigan", "model_dir": str(tiny_vocoder), "random_init": True}
    assert info["task"] == "visual_tts" and info["speech_span_s"] == [0.5, 2.0] and info["phonemes"]
    assert info["nfe"] == 4 and info["method"] == "heun"                           # Heun: 2 evaluations a step


def test_transcript_is_stretched_over_the_requested_span(trained):
    model, ckpt = load_model(trained)
    contract = FeatureContract.from_dict(ckpt["contract"])
    conds = extract_conditions(contract, None, transcript="Just some text.", speech_span=(0.4, 1.2), duration=2.0)
    batch = conditions_batch(conds, model.cfg, hop_length=160)
    assert conds["task"] == "tts" and conds["n_samples"] == 2 * SR and conds["video"] is None
    spoken = torch.nonzero(batch["phones_track"][0]).flatten()
    assert batch["phones_track"].shape == (1, 50) and spoken.min() == 10 and spoken.max() == 29   # 25 frames/s
    assert batch["video_mask"].shape == (1, 0)

    with pytest.raises(GenerateError, match="give a duration"):
        extract_conditions(contract, None, transcript="No length.")
    with pytest.raises(GenerateError, match="speech span"):
        extract_conditions(contract, None, transcript="Late.", speech_span=(1.5, 2.5), duration=2.0)


def test_text_to_speech_without_video(trained):
    wave, info = generate(trained, None, transcript="Text only.", duration=1.5, steps=2, guidance=1.0)
    assert len(wave) == 24000 and info["task"] == "tts" and info["video_frames"] == 0 and np.isfinite(wave).all()


def test_encoder_vocabulary_or_vocoder_that_do_not_fit_are_refused(trained, media, tmp_path):
    from stages.visual import make_tiny_clip

    other_clip = make_tiny_clip(tmp_path / "wider-clip", hidden_size=48)
    with pytest.raises(ContractError, match="dim: checkpoint 32, .* has 48"):
        generate(trained, media["v2s_bluetriangle_mp4_000"], steps=1, visual_model=other_clip)

    ckpt = load_checkpoint(trained)                 # re-saved through the trainer's writer: a valid checksum
    ckpt["contract"]["phones"]["vocab"]["symbols"] = ckpt["contract"]["phones"]["vocab"]["symbols"][:-1]
    save_checkpoint(ckpt, tmp_path / "other-vocab.pt")
    with pytest.raises(ContractError, match="phoneme vocabulary differs"):
        generate(tmp_path / "other-vocab.pt", None, transcript="Hello.", duration=1.0, steps=1)

    wrong_bands = make_tiny_vocoder(tmp_path / "voc80", mel=MelConfig(n_mels=80))
    with pytest.raises(VocoderError, match="model_in_dim 80"):
        generate(trained, None, transcript="Hello.", duration=1.0, steps=1, vocoder_dir=wrong_bands)
    with pytest.raises(ModelDirError, match="vocoder directory not found"):   # the project's model-directory check
        generate(trained, None, transcript="Hello.", duration=1.0, steps=1, vocoder_dir=tmp_path / "nowhere")


def test_a_playlist_as_input_video_is_refused_before_decoding(trained, media, tmp_path):
    """generate's input video gets decode's check (issue 15, 1): an .mp4 that is an HLS playlist of a real clip
    outside its folder is refused, not followed."""
    playlist = tmp_path / "clip.mp4"
    playlist.write_text(f"#EXTM3U\n#EXTINF:2.0,\n{media['v2s_bluetriangle_mp4_000']}\n#EXT-X-ENDLIST\n")
    with pytest.raises(GenerateError, match="indirect_media"):
        generate(trained, playlist, steps=1)


def test_sampling_is_seeded(trained):
    model, _ = load_model(trained)
    batch = collate([{"audio": np.zeros((12, 256)), "task": "v2s", "video": np.ones((5, model.cfg.video_dim))}])
    cond = {k: batch[k] for k in ("phones_track", "video", "video_mask", "audio_mask")}
    a, b, c = (sample_audio(model, cond, steps=3, seed=s) for s in (0, 0, 1))
    assert a.shape == (1, 12, 256) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(GenerateError, match="method"):
        sample_audio(model, cond, steps=1, method="rk4")


def test_latent_audio_trains_and_generates_through_the_vae(extracted, tiny_vae, tmp_path):
    from model.data import SamplePrep

    out, _ = extracted
    latent_out = with_latents(out, tmp_path / "latent", tiny_vae)
    contract = read_dataset_json(latent_out)[0]
    decoded = next(iter_samples(sorted((latent_out / "shards").glob("*.tar"))))
    sampled, mean = (SamplePrep(contract=contract, audio_repr="latent", latent_sample=flag)
                     for flag in (True, False))
    a, b = (sampled.raw_audio(decoded["arrays"], np.random.default_rng(s)) for s in (0, 1))
    assert a.shape == (len(decoded["arrays"]["mel"]) // 4, 128) and not np.array_equal(a, b)
    assert np.array_equal(mean.raw_audio(decoded["arrays"], np.random.default_rng(0)),
                          decoded["arrays"]["latent"][:, :128].astype(np.float32))
    with pytest.raises(ContractError, match="needs shards with VAE latents"):
        SamplePrep(contract=read_dataset_json(out)[0], audio_repr="latent")

    cfg = TrainConfig(preset="tiny", audio_repr="latent", batch_size=4, steps=3, warmup_steps=2, num_workers=0,
                      log_every=1, val_samples=2, ema=False)
    summary = run_pretrain([latent_out], tmp_path / "run", cfg)
    assert summary["model"]["audio_dim"] == 128 and np.isfinite(summary["loss"])
    wave, info = generate(tmp_path / "run" / "ckpt" / "last.pt", None, transcript="Latent speech.", duration=1.2,
                          steps=2)
    assert len(wave) == round(1.2 * SR) and np.isfinite(wave).all() and info["task"] == "tts"


def test_cli_generate_writes_the_wav_and_the_muxed_video(trained, media, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.train import train_app

    video = media["v2s_redcircle_rotated_000"]
    wav, mp4 = tmp_path / "out.wav", tmp_path / "out.mp4"
    result = CliRunner().invoke(train_app, ["generate", "--ckpt", str(trained), "--video", str(video), "--out",
                                            str(wav), "--mux", str(mp4), "--steps", "2"], terminal_width=200)
    assert result.exit_code == 0, result.output
    data, rate = sf.read(wav)
    assert rate == SR and len(data) == 2 * SR                                      # a 2 s clip
    probe = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(mp4)], capture_output=True, text=True).stderr
    assert "Video:" in probe and "Audio: aac" in probe
    assert "weights: EMA over 10 steps" in " ".join(result.output.split())
    raw = CliRunner().invoke(train_app, ["generate", "--ckpt", str(trained), "--video", str(video), "--out",
                                         str(wav), "--no-ema", "--method", "dopri5"], terminal_width=200)
    assert raw.exit_code == 0 and "weights: raw weights of step 10 (as asked: --no-ema)" in " ".join(raw.output.split())
    solved = re.search(r"dopri5: (\d+) steps, (\d+) velocity evaluations", " ".join(raw.output.split()))
    steps, nfe = (int(solved[1]), int(solved[2])) if solved else (0, 0)
    assert steps >= 1 and nfe >= 2 + 6 * steps and (nfe - 2) % 6 == 0, raw.output   # 6 per attempt (dopri5, FSAL)

    half = CliRunner().invoke(train_app, ["generate", "--ckpt", str(trained), "--video", str(video), "--out",
                                          str(wav), "--speech-start", "0.2"], terminal_width=200)
    assert half.exit_code == 1 and "--speech-end" in half.output


def test_conditions_equal_what_extract_stored_for_the_same_clip(trained, media, extracted):
    """generate conditions a clip with the features extract stored for it, to the bit: the encoder sees the same
    frames, and a clip's features do not depend on the clips that shared its encoder batch in extract."""
    out, _ = extracted
    contract = FeatureContract.from_dict(load_model(trained)[1]["contract"])
    stored = {s["key"]: s for s in iter_samples(sorted((out / "shards").glob("*.tar")))}
    for key in ("v2s_bluetriangle_mp4_000", "v2s_redcircle_rotated_000", "visual_tts_enm3_mp4_000"):
        conds = extract_conditions(contract, media[key], duration=None)
        video = stored[key]["arrays"]["video"]
        assert conds["video"].dtype == video.dtype == np.float16
        np.testing.assert_array_equal(conds["video"], video, err_msg=key)


def test_the_muxed_video_lasts_as_long_as_the_clip(trained, media, tmp_path):
    from model.generate import mux

    video = media["v2s_bluetriangle_mp4_000"]
    wave, _ = generate(trained, video, steps=2)
    sf.write(tmp_path / "g.wav", wave, SR)
    mux(video, tmp_path / "g.wav", tmp_path / "g.mp4")
    decoded = tmp_path / "back.wav"
    subprocess.run([_ffmpeg(), "-v", "error", "-i", str(tmp_path / "g.mp4"), "-map", "0:a:0", "-ac", "1", "-ar",
                    str(SR), str(decoded)], check=True)
    back, rate = sf.read(decoded)
    assert rate == SR
    assert abs(len(back) - len(wave)) <= 1024          # one AAC frame of encoder delay/padding at most
    source, muxed = (subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(p)], capture_output=True, text=True).stderr
                     for p in (video, tmp_path / "g.mp4"))
    duration = lambda probe: probe.split("Duration: ")[1].split(",")[0]   # noqa: E731  hh:mm:ss.cc
    assert duration(muxed) == duration(source)


def test_generate_batch_makes_each_clip_as_generate_does_and_feeds_evaluate(trained, corpus, tmp_path):
    """A manifest's rows with one loaded model: the same wave as `generate` bit for bit, refusals said and the
    batch going on, a re-run skipping what is written, and `run evaluate` reading the spans it asked for."""
    from typer.testing import CliRunner

    from manifests.schema import Clip, write_manifest
    from pipeline.cli.app import app

    rows = {r["clip_id"]: r for r in pq.read_table(corpus.manifest).to_pylist()}
    v2s, talk = rows["v2s_redcircle_rotated_000"], rows["visual_tts_enm3_mp4_000"]
    manifest = write_manifest([
        Clip(clip_id=v2s["clip_id"], task="v2s", video_path=v2s["video_path"]),
        Clip(clip_id=talk["clip_id"], task="visual_tts", video_path=talk["video_path"],
             transcript="Please bring the red cup.", speech_start_s=0.5, speech_end_s=2.0),
        Clip(clip_id="spoken", task="tts", transcript="Text only.", end_s=1.5),
        Clip(clip_id="late", task="v2s", video_path=v2s["video_path"], start_s=0.5, end_s=1.5),
        Clip(clip_id="absent", task="v2s", video_path="media/v2s/absent.mp4"),
    ], tmp_path / "m.parquet")
    args = ["run", "generate-batch", "--ckpt", str(trained), "--manifest", str(manifest), "--data-root",
            str(corpus.root), "--out", str(tmp_path / "gen"), "--steps", "2", "--seed", "5"]
    result = CliRunner().invoke(app, args, terminal_width=200)
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "3 generated, 2 refused" in flat and "late: trim window starts at 0.5 s" in flat and "absent" in flat
    alone, _ = generate(trained, corpus.root / talk["video_path"], transcript="Please bring the red cup.",
                        speech_span=(0.5, 2.0), steps=2, seed=5)
    batch, _ = sf.read(tmp_path / "gen" / f"{talk['clip_id']}.wav", dtype="float32")
    single, _ = sf.read(write_wav(tmp_path / "alone.wav", alone, 16000), dtype="float32")
    assert np.array_equal(batch, single)                                     # the 16-bit wav of the same wave
    logged = [json.loads(line) for line in (tmp_path / "gen" / "generated.jsonl").read_text().splitlines()]
    assert [r["nfe"] for r in logged if r["status"] == "generated"] == [2, 2, 2]   # Euler: 2 steps, 2 evaluations
    again = CliRunner().invoke(app, args, terminal_width=200)
    assert again.exit_code == 0 and "0 generated, 2 refused, 3 already there" in " ".join(again.output.split())
    result = CliRunner().invoke(app, ["run", "evaluate", "--generated", str(tmp_path / "gen"), "--reference",
                                      str(corpus.manifest), "--data-root", str(corpus.root), "--out",
                                      str(tmp_path / "eval")], terminal_width=200)
    assert result.exit_code == 0, result.output
    measured = {r["key"]: r for r in pq.read_table(tmp_path / "eval" / "metrics.parquet").to_pylist()}
    assert set(measured) == {v2s["clip_id"], talk["clip_id"], "spoken"}
    assert measured[talk["clip_id"]]["span_iou"] is not None and measured[v2s["clip_id"]]["av_offset_s"] is not None
    assert measured["spoken"]["note"] == "no reference clip of this key" and measured["spoken"]["span_iou"] is not None
