"""Configuration of the VSSFlow DiT: one frozen, keyword-only dataclass and a dict of presets.

The paper's model (`base`) is a DiT of 10 blocks, width 1536, 24 heads, about 460M parameters. With a SwiGLU
feed-forward whose hidden size is `mlp_ratio * width`, a ratio of 3.75 (hidden 5760) lands the count at ~461M
for both audio representations (mel patched 4x64 = 256-d, or VAE latents = 128-d); see tests/model/test_config.py.

`reference` is the authors' released shape with every condition: input [latent 128 | lip 1024 | phones 32 |
sync 768] per audio frame, cross-attention context [speaker | CLIP], no time positions on the CLIP keys
(`reference_config`; ~466M parameters against the reference's ~464M, BENCHMARKS.md).

Temporal streams (`streams`): the per-frame conditions of the data besides CLIP (the mouth-region `lip`, the
synchrony `sync`), each resampled to the audio frame rate and concatenated to the noisy audio (model/streams.py).
A config names the streams it was built for, with what each frame holds: {"lip": {"kind": "crops", "shape": [88,
88], "dim": 32}} or {"sync": {"kind": "features", "shape": [768], "dim": 32}}; `dim` is the stream's width in the
concatenation (the preset's `stream_dims`, else DEFAULT_STREAM_DIM).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STREAM_KINDS = ("crops", "features")   # grey mouth crops [H, W] uint8 (a conv front-end), or encoder features [D]
VIDEO_POSITIONS = ("rope", "none")      # time positions on the CLIP keys of cross-attention, or none
DEFAULT_STREAM_DIM = 64


@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    width: int
    heads: int
    depth: int
    mlp_ratio: float = 3.75          # SwiGLU hidden size = round(mlp_ratio * width)
    audio_dim: int = 256             # 256: mel frames patched 4x64 (model/batch.py); 128: VAE latents
    video_dim: int = 768             # CLIP ViT-B/16 features
    phone_vocab_size: int = 256      # must cover the dataset's phoneme vocabulary (dataset.json); id 0 = no phone
    phone_dim: int = 32              # phoneme embedding concatenated per frame to the noisy audio
    max_video_frames: int = 100      # longest clip the model accepts: 10 s at video_fps
    rope_base: float = 10000.0
    dropout: float = 0.0
    ref_token: bool = False          # the speaker token, first in the cross-attention context
    ref_dim: int = 256               # its input size (used only when ref_token)
    video_positions: str = "rope"    # RoPE time positions on the CLIP keys ("none": the reference's choice)
    streams: dict = field(default_factory=dict)       # the temporal streams the model takes (module docstring)
    stream_dims: dict = field(default_factory=dict)   # a preset's widths per stream name in the concatenation
    frontend_channels: int = 16      # channels of the first conv of the mouth-crop front-end (doubling per layer)
    audio_fps: float = 25.0          # frames/s of the audio sequence (latents, or mel patches of 4 frames at 100/s)
    video_fps: float = 10.0

    def __post_init__(self) -> None:
        for name in ("width", "heads", "depth", "audio_dim", "video_dim", "phone_vocab_size", "phone_dim",
                     "max_video_frames", "ref_dim", "frontend_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DiTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mlp_ratio <= 0 or self.audio_fps <= 0 or self.video_fps <= 0 or self.rope_base <= 1:
            raise ValueError("mlp_ratio, audio_fps, video_fps must be positive and rope_base > 1")
        if self.video_positions not in VIDEO_POSITIONS:
            raise ValueError(f"video_positions must be one of {VIDEO_POSITIONS}, got {self.video_positions!r}")
        for name, s in self.streams.items():
            if set(s) != {"kind", "shape", "dim"} or s["kind"] not in STREAM_KINDS or int(s["dim"]) <= 0:
                raise ValueError(f"stream {name!r} must be {{kind: one of {STREAM_KINDS}, shape: [...], dim: > 0}}, "
                                 f"got {s}")
            if len(s["shape"]) != (2 if s["kind"] == "crops" else 1) or min(s["shape"]) <= 0:
                raise ValueError(f"stream {name!r}: shape {s['shape']} does not fit kind {s['kind']!r}")

    def conditions(self) -> list[str]:
        """What the network takes besides the noisy audio: text, video, its streams, the speaker."""
        return ["text", "video", *sorted(self.streams), *(["speaker"] if self.ref_token else [])]

    def stream_dim(self, name: str) -> int:
        """The width a stream of this name gets in the concatenation when a model is built for it."""
        return int(self.stream_dims.get(name, DEFAULT_STREAM_DIM))

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))

    @property
    def max_audio_frames(self) -> int:
        """Audio frames covering the same duration as `max_video_frames`."""
        return int(self.max_video_frames * self.audio_fps / self.video_fps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DiTConfig fields: {unknown}")
        return cls(**d)


PRESETS: dict[str, DiTConfig] = {
    "base": DiTConfig(width=1536, heads=24, depth=10),   # the paper's size, ~461M parameters
    "small": DiTConfig(width=384, heads=6, depth=6),
    "tiny": DiTConfig(width=64, heads=4, depth=2, stream_dims={"lip": 32, "sync": 32}, frontend_channels=8),
    # the authors' shapes: latents, lip features 1024, sync features 768 in self-attention, [speaker | CLIP] without
    # time positions in cross-attention (reference_config gives it with all its streams)
    "reference": DiTConfig(width=1536, heads=24, depth=10, audio_dim=128, video_positions="none",
                           stream_dims={"lip": 1024, "sync": 768}, frontend_channels=64),
}


def reference_config(**overrides: Any) -> DiTConfig:
    """The `reference` preset built for every condition the authors' model takes: lip features (1024-d), sync
    features (768-d) and a speaker token (256-d), at the phone vocabulary of the ARPAbet set (70 ids)."""
    streams = {"lip": {"kind": "features", "shape": [1024], "dim": 1024},
               "sync": {"kind": "features", "shape": [768], "dim": 768}}
    return preset("reference", **{"streams": streams, "ref_token": True, "phone_vocab_size": 70, **overrides})


@dataclass(frozen=True, kw_only=True)
class TrainingDefaults:
    """How a preset is trained unless the run's config or flags say otherwise (model/train_config.py resolves a
    TrainConfig's unset fields from these; the run summary says where each value came from)."""

    lr: float
    warmup_steps: int                # linear warm-up; capped at a share of a shorter run (train_config.py)
    betas: tuple[float, float]       # AdamW
    ema_decay: float                 # the EMA's decay once warmed up (model/ema.py)
    batch_size: int                  # samples per step and training process


# base: the paper's recipe for the 461M model on GPUs. tiny: measured on CPU (BENCHMARKS.md, "A short run from the
# CLI"): 400 steps learn the onset corpus with these. small: between the two, not measured; lr follows 1/width from
# base's (1e-4 x 1536 / 384), which also lands tiny's measured 3e-3 near 1536 / 64 x 1e-4 = 2.4e-3.
TRAINING_DEFAULTS: dict[str, TrainingDefaults] = {
    "base": TrainingDefaults(lr=1e-4, warmup_steps=2000, betas=(0.9, 0.999), ema_decay=0.999, batch_size=36),
    "small": TrainingDefaults(lr=4e-4, warmup_steps=500, betas=(0.9, 0.99), ema_decay=0.999, batch_size=36),
    "tiny": TrainingDefaults(lr=3e-3, warmup_steps=20, betas=(0.9, 0.95), ema_decay=0.99, batch_size=8),
    "reference": TrainingDefaults(lr=1e-4, warmup_steps=2000, betas=(0.9, 0.999), ema_decay=0.999, batch_size=36),
}


def preset(name: str, **overrides: Any) -> DiTConfig:
    """A preset with some fields replaced, e.g. `preset("base", audio_dim=128, phone_vocab_size=vocab)`."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
