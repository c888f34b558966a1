"""Generate audio for a silent video (and a transcript) with a trained checkpoint.

Conditions are extracted by the very stage code of `pipeline run extract`, configured from the checkpoint's feature
contract: `DecodeStage` (frames by presentation time at the contract's fps and size) on a one-row manifest-like
dict, `VisualEncoderStage` with the encoder the contract names, `PhonemeStage` with its language and vocabulary.
An encoder or vocabulary that differs from the contract is refused with the fields that differ: features made by
another encoder would be silently wrong. The lip/sync streams and the speaker reference, for a model built for them,
come from model/generate_conditions.py (the mouth stream by MouthStage from the video, `--speaker-ref` by
SpeakerStage; `use_lip=False` masks the lip stream).

DecodeStage wants an audio track (extract always has one); a silent video has none. It is given a silent 16 kHz
file of the clip's length instead (the requested duration, else the contract's max_seconds, so the clip is the
video cut to max_seconds), so the video is decoded exactly as extract decodes it; the audio is not used.

Sampling: `FlowMatching.sample` (Euler or Heun with fixed steps, or adaptive dopri5; info["nfe"] says how many
velocity evaluations it took) from seeded N(0, I) noise, classifier-free guidance against every condition dropped;
the audio sequence covers the clip (ceil to whole frames, the wave is cut to the clip's exact sample count). Then
un-standardise, mel patches -> mel (or VAE latents -> mel with the contract's VAE), clip the mel to the range any
wave in [-1, 1] can have (an undertrained model, pushed by guidance, can leave it and the vocoder would blow up; the
clipped share is reported), and mel -> wave with a HiFi-GAN vocoder directory or Griffin-Lim (model/vocoder.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from manifests.atomic import atomic_open, publish, temp_path
from model.batch import unpatch_mel
from model.checkpoint import ema_weights, load_checkpoint
from model.config import DiTConfig
from model.dit import VSSFlowDiT
from model.ema import describe_span
from model.flow import METHODS, FlowMatching, cfg_velocity_fn, null_conditions
from model.generate_conditions import (
    GenerateError,
    check_conditions,
    conditions_batch,
    conditions_used,
    model_conditions,
    run_stage,
    run_streams,
    silent_track,
    speaker_embedding,
    stream_frame_needs,
)
from model.vocoder import load_vocoder, log_mel_bounds
from stages.device import pick_device
from stages.format.contract import ContractError, FeatureContract

MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}   # output suffix -> ffmpeg muxer


# ----------------------------------------------------------------------------------------------------------------------
# The checkpoint


def load_model(ckpt_path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
               ) -> tuple[VSSFlowDiT, dict[str, Any]]:
    """The network of a checkpoint (its EMA weights when it has them and use_ema), in eval mode, and the checkpoint;
    ckpt["weights"] says which weights were loaded and what they average (`weights_used`)."""
    ckpt = load_checkpoint(ckpt_path)
    model = VSSFlowDiT(DiTConfig.from_dict(ckpt["model_config"]))
    weights = ema_weights(ckpt) if use_ema else None
    model.load_state_dict(weights if weights is not None else ckpt["model"])
    ckpt["used_ema"] = weights is not None
    ckpt["weights"] = weights_used(ckpt, asked_ema=use_ema)
    return model.to(device).eval(), ckpt


def weights_used(ckpt: dict[str, Any], *, asked_ema: bool) -> dict[str, Any]:
    """{"kind": "ema" | "raw", "step", "ema": what the EMA averages (model/ema.py ema_span) or None, "description"}."""
    step = int(ckpt["step"])
    if ckpt["used_ema"]:
        span = ckpt["ema_span"]
        return {"kind": "ema", "step": step, "ema": span, "description": describe_span(span)}
    why = "as asked: --no-ema" if not asked_ema else "the checkpoint keeps no EMA"
    return {"kind": "raw", "step": step, "ema": None, "description": f"raw weights of step {step} ({why})"}


# ----------------------------------------------------------------------------------------------------------------------
# Contract checks


def check_visual_encoder(contract: FeatureContract, model_dir: str | Path) -> None:
    """Refuse an encoder directory whose architecture differs from the one the training features came from."""
    from stages.visual import describe_clip_dir

    expected = contract.video_encoder
    found = describe_clip_dir(model_dir)
    diffs = [f"{k}: checkpoint {expected[k]!r}, {model_dir} has {v!r}" for k, v in found.items()
             if k in expected and expected[k] != v]
    if diffs:
        raise ContractError(f"the visual encoder in {model_dir} is not the one the checkpoint's features were made "
                            f"with ({'; '.join(diffs)}). Pass the encoder named in the checkpoint's contract "
                            f"({expected.get('name')} from {expected.get('model_dir')}).")


def check_phonemes(contract: FeatureContract, stage) -> list[str]:
    """Refuse a phoneme vocabulary that differs from the contract's; other differences become warnings."""
    have, want = stage.vocab_dict(), contract.phones
    if have["vocab"] != want["vocab"]:
        hv, wv = have["vocab"], want["vocab"]
        raise ContractError(f"phoneme vocabulary differs from the checkpoint's: this install has "
                            f"{hv.get('version')} ({len(hv.get('symbols', []))} symbols), the checkpoint was trained "
                            f"on {wv.get('version')} ({len(wv.get('symbols', []))} symbols)")
    return [f"phonemes: {k} is {have.get(k)!r} here, {want.get(k)!r} in the checkpoint's contract"
            for k in sorted(set(have) | set(want)) if k != "vocab" and have.get(k) != want.get(k)]


# ----------------------------------------------------------------------------------------------------------------------
# Conditions from media, with the extract stages


def extract_conditions(contract: FeatureContract, video_path: Optional[str | Path], *,
                       transcript: Optional[str] = None, speech_span: Optional[Sequence[float]] = None,
                       duration: Optional[float] = None, visual_model: Optional[str | Path] = None,
                       device: str = "auto", streams: Sequence[str] = (),
                       speaker_ref: Optional[str | Path] = None) -> dict[str, Any]:
    """The conditions of one clip, as extract would store them: video float16 [T_v, D] (None without a video),
    phone_ids int16 [N] (None without a transcript), speech_span_s, duration_s, task; plus warnings. With `streams`
    (names of the contract's temporal streams), "streams" {name: {"rows", "valid", "fps", "frame_shape", "dtype"}}
    (model/generate_conditions.py; rows None where the task does not carry the stream); with `speaker_ref` (a wav),
    "speaker" float32 [dim], its embedding."""
    from stages.base import Reject
    from stages.decode import DecodeConfig, DecodeStage, check_media_file
    from stages.phonemes import PhonemeStage
    from stages.visual import VisualEncoderStage

    if video_path is None and duration is None:
        raise GenerateError("without a video, give a duration (seconds)")
    if duration is not None and not 0 < duration <= contract.max_seconds:
        raise GenerateError(f"duration {duration} s must be in (0, {contract.max_seconds}] (the contract's "
                            f"max_seconds)")
    if speech_span is not None and transcript is None:
        raise GenerateError("a speech span needs a transcript")
    task = ("visual_tts" if transcript else "v2s") if video_path is not None else "tts"
    if task == "tts" and not transcript:
        raise GenerateError("without a video, give a transcript (text-to-speech)")
    warnings: list[str] = []
    encoder = contract.video_encoder
    if video_path is not None:
        video_path = Path(video_path).resolve()
        if not video_path.is_file():
            raise GenerateError(f"video {video_path} not found")
        try:  # the check every decode makes: only a self-contained media file, never a playlist of other files
            check_media_file(video_path)
        except Reject as e:
            raise GenerateError(f"video {video_path} refused: {e}") from None
        visual_model = Path(visual_model or encoder["model_dir"])
        check_visual_encoder(contract, visual_model)
    phonemes = None
    if transcript:
        phonemes = PhonemeStage.from_contract(contract.phones)  # the phone set and text rules of the checkpoint
        warnings += check_phonemes(contract, phonemes)

    streams = tuple(sorted(streams))
    missing = [name for name in streams if name not in (contract.streams or {})]
    if missing:
        raise ContractError(f"the checkpoint's contract records no {', '.join(missing)} stream to extract")
    speaker = speaker_embedding(contract, speaker_ref, device) if speaker_ref is not None else None
    needs = stream_frame_needs(contract, streams) if video_path is not None else ()

    decode = DecodeConfig(fps=contract.video_fps, sample_rate=contract.sample_rate,
                          image_size=encoder.get("decode_size", 224), max_seconds=contract.max_seconds)
    with tempfile.TemporaryDirectory(prefix="vssflow-generate-") as tmp:
        # DecodeStage reads an audio track; the model does not use it
        silence = silent_track(duration or contract.max_seconds, contract.sample_rate, tmp)
        paths = [silence] + ([video_path] if video_path is not None else [])
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
        row = {"clip_id": "generate", "task": task, "audio_path": str(silence.relative_to(root)),
               "video_path": str(video_path.relative_to(root)) if video_path is not None else None,
               "transcript": transcript, "start_s": None, "end_s": duration}
        decoder = DecodeStage(data_root=str(root), config=decode, streams=needs,   # frames as extract made them
                              native_frames=encoder.get("scaler") == "opencv")
        row = run_stage(decoder, row, "the input")
    if duration is not None and row["duration_s"] < duration - 1.0 / contract.sample_rate:
        raise GenerateError(f"requested duration {duration} s is longer than the video ({row['duration_s']:.3f} s)")
    duration_s = float(row["duration_s"])
    if task != "tts":
        row = run_stage(VisualEncoderStage(encoder=encoder["name"], model_dir=str(visual_model),
                                           precision=encoder.get("precision", "auto"), device=device), row, "the input")
    extra = run_streams(contract, streams, row, device) if streams else {}   # rows None where the task has none
    span = None
    if phonemes is not None:
        row = run_stage(phonemes, row, "the input")
        a, b = (0.0, duration_s) if speech_span is None else (float(speech_span[0]), float(speech_span[1]))
        if not 0.0 <= a < b <= duration_s + 1e-6:
            raise GenerateError(f"speech span [{a}, {b}] s must satisfy 0 <= start < end <= {duration_s:.3f} s")
        span = [a, min(b, duration_s)]
    return {"task": task, "duration_s": duration_s, "n_samples": int(len(row["audio"])),
            "video": row.get("video"), "phone_ids": row.get("phone_ids"), "phonemes": row.get("phonemes"),
            "speech_span_s": span, "streams": extra, "speaker": speaker,
            "speaker_ref": str(speaker_ref) if speaker_ref is not None else None, "warnings": warnings}


# ----------------------------------------------------------------------------------------------------------------------
# Sampling


@torch.no_grad()
def sample_audio(model: VSSFlowDiT, cond: dict[str, torch.Tensor], *, steps: int = 25, method: str = "euler",
                 guidance: float = 3.0, seed: int = 0, uncond: Optional[dict] = None,
                 stats: Optional[dict] = None) -> torch.Tensor:
    """Standardised audio [B, T, A] for conditions cond (a collated batch's tensors on the model's device).
    guidance 1 uses cond alone; otherwise CFG against uncond (default: every condition dropped). method is one of
    METHODS (dopri5 ignores steps); `stats` is filled with the solve's cost (FlowMatching.sample)."""
    if method not in METHODS:
        raise GenerateError(f"method must be one of {METHODS}, got {method!r}")
    device = next(model.parameters()).device
    shape = (*cond["audio_mask"].shape, model.cfg.audio_dim)                           # [B, T, A]
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    velocity = cfg_velocity_fn(model, cond, uncond if uncond is not None else null_conditions(cond), scale=guidance)
    return FlowMatching().sample(velocity, x0, steps, method=method, stats=stats)


def audio_to_mel(audio: torch.Tensor, ckpt: dict[str, Any], *, vae_dir: Optional[str | Path] = None) -> np.ndarray:
    """Standardised audio [T, A] -> natural-log mel [4 T, n_mels] float32 (VAE decode for latent checkpoints)."""
    norm, contract = ckpt["audio_norm"], FeatureContract.from_dict(ckpt["contract"])
    raw = audio.float().cpu() * norm["std"] + norm["mean"]                             # [T, A]
    if ckpt["config"]["audio_repr"] == "mel":
        return unpatch_mel(raw, contract.n_mels).numpy()                               # [4T, n_mels]
    from stages.latent import decode_latent, load_vae

    vae_dir = vae_dir or (contract.latent or {}).get("vae_dir")
    if not vae_dir:
        raise GenerateError("a latent checkpoint needs its VAE: pass vae_dir")
    return decode_latent(load_vae(vae_dir), raw.numpy())                               # [4T, n_mels]


def generate(ckpt: str | Path, video_path: Optional[str | Path], transcript: Optional[str] = None,
             speech_span: Optional[Sequence[float]] = None, duration: Optional[float] = None, steps: int = 25,
             method: str = "euler", guidance: float = 3.0, vocoder_dir: Optional[str | Path] = None, seed: int = 0,
             *, visual_model: Optional[str | Path] = None, vae_dir: Optional[str | Path] = None,
             device: str = "auto", use_ema: bool = True, speaker_ref: Optional[str | Path] = None,
             use_lip: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio for a video (V2S), a video and its transcript (VisualTTS), or a transcript and a duration (TTS).

    Returns the float32 wave [N] at the contract's sample rate (16 kHz), N = the clip's samples (the video's length
    up to max_seconds, or `duration`), and an info dict (task, lengths, sampler settings, vocoder, the conditions
    used, warnings, timings). speech_span (start_s, end_s) in clip time places the speech (default: the whole clip).
    A model built for the lip/sync streams gets them from the video (`use_lip=False` masks the lip stream: an
    ablation); one with the speaker token gets `speaker_ref`'s embedding (a wav), or the token masked without it.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dev = torch.device(pick_device(device))
    model, checkpoint = load_model(ckpt, use_ema=use_ema, device=dev)
    contract = FeatureContract.from_dict(checkpoint["contract"])
    mel_cfg = contract.mel_config()
    check_conditions(model.cfg, contract, speaker_ref=speaker_ref, use_lip=use_lip)
    vocoder = load_vocoder(vocoder_dir, mel_cfg, device=dev, seed=seed)   # fail on a bad vocoder before the work
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    conds = extract_conditions(contract, video_path, transcript=transcript, speech_span=speech_span,
                               duration=duration, visual_model=visual_model, device=str(dev),
                               streams=tuple(model.cfg.streams), speaker_ref=speaker_ref)
    batch = conditions_batch(conds, model.cfg, mel_cfg.hop_length)
    timings["conditions_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cond = model_conditions(batch, use_lip=use_lip, device=dev)
    solver: dict[str, Any] = {}
    audio = sample_audio(model, cond, steps=steps, method=method, guidance=guidance, seed=seed,
                         stats=solver)[0]                                                            # [T, A]
    mel = audio_to_mel(audio, checkpoint, vae_dir=vae_dir)                                           # [4T, n_mels]
    low, high = log_mel_bounds(mel_cfg)     # no wave in [-1, 1] has a log-mel outside: project onto that range
    clipped = float(np.mean((mel < low) | (mel > high)))
    mel = np.clip(mel, low, high)
    timings["sample_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wave = vocoder(mel)[: conds["n_samples"]]                                                        # [N]
    timings["vocoder_s"] = time.perf_counter() - t0
    if not np.isfinite(wave).all():
        raise GenerateError("the generated wave holds NaN or Inf")
    info = {"task": conds["task"], "duration_s": conds["duration_s"], "sample_rate": contract.sample_rate,
            "n_samples": int(len(wave)), "audio_frames": int(audio.shape[0]),
            "video_frames": 0 if conds["video"] is None else int(len(conds["video"])),
            "phonemes": conds["phonemes"], "speech_span_s": conds["speech_span_s"], "steps": steps,
            "method": method, "nfe": solver["nfe"], "solver": solver, "guidance": guidance, "seed": seed,
            "checkpoint": str(ckpt),
            "checkpoint_step": int(checkpoint["step"]), "ema": checkpoint["used_ema"], "weights": checkpoint["weights"],
            "feature_hash": contract.feature_hash, "vocoder": vocoder.info(), "device": str(dev),
            "mel_clipped_frac": clipped, "peak": float(np.abs(wave).max()) if len(wave) else 0.0,
            "conditions": conditions_used(conds, batch, use_lip=use_lip), "warnings": conds["warnings"],
            "seconds": timings}
    return wave, info


# ----------------------------------------------------------------------------------------------------------------------
# Output files


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM wav, written atomically (`manifests.atomic`)."""
    import soundfile as sf

    path = Path(path)
    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def mux(video_path: str | Path, wav_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """The video's picture with the wav as its sound (ffmpeg), cut to the shorter of the two. The picture is
    copied when the output container takes its codec, else re-encoded to H.264 (reported in the result)."""
    out = Path(out_path)
    muxer = MUXERS.get(out.suffix.lower())
    if muxer is None:
        raise GenerateError(f"cannot write video {out}: use one of {', '.join(sorted(MUXERS))}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    base = [_ffmpeg(), "-y", "-v", "error", "-i", str(video_path), "-i", str(wav_path), "-map", "0:v:0",
            "-map", "1:a:0", "-c:a", "aac", "-shortest", "-f", muxer]
    attempts = (["-c:v", "copy"], ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    errors = []
    for video_codec in attempts:
        result = subprocess.run(base + video_codec + [str(tmp)], capture_output=True, text=True)
        if result.returncode == 0:
            publish(tmp, out)
            return {"path": str(out), "video": "copied" if video_codec[1] == "copy" else "re-encoded (libx264)"}
        errors.append(result.stderr.strip()[-500:])
    tmp.unlink(missing_ok=True)
    raise GenerateError(f"ffmpeg could not mux {video_path} with {wav_path}: {' | '.join(errors)}")
