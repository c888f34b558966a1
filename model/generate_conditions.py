"""The time-sensitive conditions of generation: the lip and sync streams from the input video, the speaker token from
a reference recording, each made by the very stages `pipeline run extract` runs, configured from the checkpoint's
feature contract.

- lip: decode picks the mouth stream's grey frames (`LipConfig.frame_need()`, the contract's fps and max_side) in
  the same read as the CLIP frames; `MouthStage` with the contract's finder (roi, box or detector settings, crop
  size) makes the crops and their validity; `LipEncoderStage` when the contract's lip encoder is a model directory.
  Only the tasks extract gives the stream to (joint, visual_tts) get it: a V2S clip has it masked, as in training.
  A talking clip where no face is found is refused with the stage's reason.
- sync: the synchrony encoder's frames at its rate and size, then `SyncEncoderStage`. It reads the sound under the
  frames too; at generation there is none yet, so it gets silence (the clip's length of zeros).
- speaker: the reference wav decoded and resampled to the contract's rate, loudness-normalised and stored as extract
  stores a clip's audio (`AudioFeatureStage`), then `SpeakerStage` embeds it whole (a manifest row without a speech
  span is embedded over the whole clip too). A reference without voice is refused.

`model_conditions` turns the extracted conditions into the network's inputs on a device: the streams resampled to
the audio frames by presentation time (`model.batch.resample_stream`), collated with the speaker token (masked when
no reference is given: the model learned that through speaker dropout), and the lip stream masked for `use_lip=False`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from manifests.errors import PipelineError
from model.batch import collate, conditions, resample_stream
from model.config import DiTConfig
from model.flow import without_streams
from stages.format.contract import ContractError, FeatureContract
from stages.format.rates import MEL_PER_AUDIO_FRAME


class GenerateError(PipelineError, ValueError):
    """Input that cannot be generated for (no video and no duration, a span outside the clip, a reject, no face in a
    talking clip, a voiceless speaker reference, ...). model/generate.py re-exports it."""


def run_stage(stage, row: dict[str, Any], what: str) -> dict[str, Any]:
    """One row through one extract stage; its reject is a GenerateError that names the stage and its reason."""
    row = stage([row])[0]
    if row.get("reject_reason") is not None:
        raise GenerateError(f"{stage.name} refused {what}: {row['reject_reason']}: {row.get('reject_detail')}")
    return row


# ----------------------------------------------------------------------------------------------------------------------
# The streams' stages, from the contract


def lip_config(contract: FeatureContract):
    """The LipConfig extract ran with, read back from the contract's lip stream record."""
    from stages.lip import LipConfig
    from stages.mouth import FACE_CASCADE

    record = contract.streams["lip"]
    encoder, finder = record["encoder"], record["encoder"]["mouth"]
    if finder["roi"] == "detect" and finder["detector"] != f"opencv-haar/{FACE_CASCADE}":
        raise ContractError(f"the checkpoint's mouth stream was found with {finder['detector']}; this install has "
                            f"opencv-haar/{FACE_CASCADE}")
    detect = {k: finder[k] for k in ("detect_fps", "smooth_s", "min_face_share") if k in finder}
    return LipConfig(fps=float(record["fps"]), roi=finder["roi"], box=finder.get("box"),
                     crop_size=int(finder["crop_size"]), max_side=int(finder["max_side"]), **detect,
                     model_dir=None if encoder["name"] == "crops" else encoder["model_dir"])


def stream_frame_needs(contract: FeatureContract, names: tuple) -> tuple:
    """What decode reads for the streams `names`, as extract's `frame_needs` asked for them."""
    from stages.sync import sync_frame_need

    needs = []
    if "lip" in names:
        needs.append(lip_config(contract).frame_need())
    if "sync" in names:
        needs.append(sync_frame_need(contract.streams["sync"]["encoder"]))
    return tuple(needs)


def stream_stages(contract: FeatureContract, names: tuple, device: str) -> list:
    """The stages that turn the decoded frames into the streams `names`, in extract's order."""
    stages = []
    if "lip" in names:
        from stages.lip import LipEncoderStage, MouthStage

        lip = lip_config(contract)
        stages.append(MouthStage(config=lip))
        if lip.model_dir:
            stages.append(LipEncoderStage(model_dir=lip.model_dir, batch_frames=lip.batch_frames, device=device))
    if "sync" in names:
        from stages.sync import SyncEncoderStage

        stages.append(SyncEncoderStage(model_dir=contract.streams["sync"]["encoder"]["model_dir"], device=device))
    return stages


def run_streams(contract: FeatureContract, names: tuple, row: dict[str, Any], device: str) -> dict[str, dict]:
    """{name: {"rows", "valid", "fps", "frame_shape", "dtype"}} for each stream of `names` (rows None: the task does
    not carry it). `row` is a decoded row holding the streams' frames and the clip's (silent) audio."""
    from stages.audio import encode_flac

    row["flac"] = encode_flac(np.zeros(len(row["audio"]), np.float32), contract.sample_rate)   # no sound yet
    for stage in stream_stages(contract, names, device):
        row = run_stage(stage, row, "the video")
    out = {}
    for name in names:
        record = contract.streams[name]
        out[name] = {"rows": row.get(name), "valid": row.get(f"{name}_valid"), "fps": float(record["fps"]),
                     "frame_shape": tuple(record["frame_shape"]), "dtype": record["dtype"]}
    return out


# ----------------------------------------------------------------------------------------------------------------------
# The speaker reference


def check_conditions(model_cfg: DiTConfig, contract: FeatureContract, *, speaker_ref: Optional[str | Path],
                     use_lip: bool) -> None:
    """Refuse, before any work, a speaker reference or a lip ablation the checkpoint's model cannot take."""
    if not use_lip and "lip" not in model_cfg.streams:
        raise GenerateError("--no-lip: this checkpoint's model takes no lip stream; there is nothing to mask")
    if speaker_ref is None:
        return
    if not model_cfg.ref_token or not contract.speaker:
        raise GenerateError(f"--speaker-ref {speaker_ref}: this checkpoint's model takes no speaker reference (it "
                             f"was built without the speaker token); generate without --speaker-ref")
    if not Path(speaker_ref).is_file():
        raise GenerateError(f"speaker reference {speaker_ref} not found")


def speaker_embedding(contract: FeatureContract, wav_path: str | Path, device: str = "auto") -> np.ndarray:
    """float32 [dim]: the reference recording embedded as extract embeds a clip's speech (module docstring)."""
    from stages.audio import AudioFeatureStage, LoudnessConfig
    from stages.decode import DecodeConfig, DecodeStage
    from stages.speaker import SpeakerConfig, SpeakerStage

    path = Path(wav_path).resolve()
    decode = DecodeConfig(sample_rate=contract.sample_rate, max_seconds=contract.max_seconds)
    row = {"clip_id": "speaker_ref", "task": "tts", "audio_path": path.name, "video_path": None,
           "transcript": "", "start_s": None, "end_s": None}
    what = f"the speaker reference {path}"
    row = run_stage(DecodeStage(data_root=str(path.parent), config=decode), row, what)
    encoder = contract.speaker["encoder"]
    model_dir = encoder.get("model_dir") if encoder["name"] != "resemblyzer" else None
    try:   # stored as extract stores audio (loudness, 16-bit), then embedded
        row = run_stage(AudioFeatureStage(mel=contract.mel_config(), loudness=LoudnessConfig(**contract.loudness)),
                        row, what)
        row = run_stage(SpeakerStage(config=SpeakerConfig(model_dir=model_dir, device=device)), row, what)
    except GenerateError as e:
        raise GenerateError(f"{what} has no voice to embed ({e})") from None
    return row["speaker_ref"]


# ----------------------------------------------------------------------------------------------------------------------
# The network's inputs


def silent_track(seconds: float, sample_rate: int, folder: str | Path) -> Path:
    """A 16-bit wav of zeros: the audio track DecodeStage reads beside a silent video."""
    import soundfile as sf

    path = Path(folder) / "silence.wav"
    sf.write(path, np.zeros(int(round(seconds * sample_rate)), np.int16), sample_rate, subtype="PCM_16")
    return path


def conditions_batch(conds: dict[str, Any], model_cfg: DiTConfig, hop_length: int) -> dict[str, Any]:
    """A one-sample collated batch whose audio covers the clip (ceil to whole audio frames), with the model's
    streams resampled to the audio frames and its speaker token (masked without a reference)."""
    frames = math.ceil(conds["n_samples"] / (MEL_PER_AUDIO_FRAME * hop_length))
    video = conds["video"]
    if video is not None and len(video) > model_cfg.max_video_frames:
        raise GenerateError(f"the clip has {len(video)} video frames; the model takes at most "
                            f"{model_cfg.max_video_frames} ({model_cfg.max_video_frames / model_cfg.video_fps:g} s): "
                            f"pass a shorter duration")
    streams = conds.get("streams") or {}
    sample = {"audio": np.zeros((frames, model_cfg.audio_dim), np.float32), "task": conds["task"], "video": video,
              "phone_ids": conds["phone_ids"], "speech_span_s": conds["speech_span_s"], "speaker": conds.get("speaker"),
              "streams": {name: resample_stream(s["rows"], s["valid"], s["fps"], frames, model_cfg.audio_fps)
                          for name, s in streams.items() if s["rows"] is not None}}
    layout = {name: (s["frame_shape"], np.dtype(s["dtype"])) for name, s in streams.items()}
    return collate([sample], audio_fps=model_cfg.audio_fps, video_dim=model_cfg.video_dim, streams=layout or None,
                   ref_dim=model_cfg.ref_dim if model_cfg.ref_token else None)


def model_conditions(batch: dict[str, Any], *, use_lip: bool, device: torch.device) -> dict[str, Any]:
    """The network's condition inputs on `device`; the lip stream masked when not use_lip."""
    cond = conditions(batch)
    if not use_lip:
        cond = without_streams(cond, ["lip"])
    moved = {k: v.to(device) for k, v in cond.items() if isinstance(v, torch.Tensor)}
    for key in ("streams", "stream_masks"):
        if key in cond:
            moved[key] = {name: t.to(device) for name, t in cond[key].items()}
    return moved


def conditions_used(conds: dict[str, Any], batch: dict[str, Any], *, use_lip: bool) -> dict[str, Any]:
    """What info reports: per stream, whether it was used and its valid audio frames of the total; the speaker."""
    out: dict[str, Any] = {}
    for name, s in (conds.get("streams") or {}).items():
        mask = batch["stream_masks"][name][0]
        if s["rows"] is None:
            out[name] = {"used": False, "why": f"the {conds['task']} task does not carry it (masked, as in training)"}
        elif name == "lip" and not use_lip:
            out[name] = {"used": False, "why": "--no-lip (masked)", "valid_frames": int(mask.sum()),
                         "frames": int(mask.numel())}
        else:
            out[name] = {"used": True, "valid_frames": int(mask.sum()), "frames": int(mask.numel())}
    if "ref_mask" in batch:
        out["speaker"] = ({"used": True, "file": str(conds["speaker_ref"])} if conds.get("speaker") is not None
                          else {"used": False, "why": "no --speaker-ref (masked)"})
    return out

