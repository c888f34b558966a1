"""What a training run is configured with (`TrainConfig`), and the network that configuration implies for some data.

A run's config is stored in its checkpoint; a resumed run may change only the fields in
`model.checkpoint.RESUMABLE_CHANGES`. The YAML of `pipeline train --config` holds these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from model.config import DiTConfig, preset
from stages.format.contract import AUDIO_REPRS, FeatureContract


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # model
    preset: str = "base"
    model_overrides: dict = field(default_factory=dict)    # DiTConfig fields, e.g. {"max_video_frames": 50}
    audio_repr: str = "mel"                                 # "mel" (patched 4x64) or "latent" (VAE posterior)
    latent_sample: bool = True                              # latent: sample the posterior (False: its mean)
    audio_mean: Optional[float] = None                      # standardisation; None: estimated from the data
    audio_std: Optional[float] = None
    norm_samples: int = 256                                 # samples read to estimate it
    # optimisation
    batch_size: int = 36
    steps: int = 100_000
    lr: float = 1e-4
    warmup_steps: int = 2000                                # linear warm-up, then constant
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: Optional[float] = 0.999                      # None: no EMA
    # conditioning dropout (classifier-free guidance) and masking
    p_drop_all: float = 0.1
    p_drop_video: float = 0.0
    p_drop_text: float = 0.0
    video_frame_mask_p: float = 0.0                         # mask each video frame independently (fine-tuning)
    # data
    task_weights: Optional[dict] = None                     # {"v2s": .., "visual_tts": .., "tts": .., "joint": ..}
    val_split: Optional[str] = "test"
    val_samples: int = 16
    num_workers: int = 2                                    # DataLoader workers per training process
    shuffle_buffer: int = 128                               # raw samples per source and loader worker
    epoch_steps: int = 1000                                 # batches per seeded data epoch (model/data/stream.py)
    # bookkeeping
    log_every: int = 10
    eval_every: int = 1000
    save_every: int = 1000
    seed: int = 0
    # execution
    device: str = "auto"
    bf16: bool = True                                       # bf16 autocast, on CUDA only
    deterministic: bool = False                             # torch.use_deterministic_algorithms (CPU tests)
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "model_overrides", dict(self.model_overrides or {}))
        if self.audio_repr not in AUDIO_REPRS:
            raise ValueError(f"audio_repr must be one of {AUDIO_REPRS}, got {self.audio_repr!r}")
        for name in ("batch_size", "log_every", "eval_every", "save_every", "epoch_steps", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.warmup_steps < 0 or self.num_workers < 0 or self.val_samples < 0:
            raise ValueError("steps, warmup_steps, num_workers and val_samples must be >= 0")
        for name in ("p_drop_all", "p_drop_video", "p_drop_text", "video_frame_mask_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ValueError("lr and grad_clip must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def model_config_for(cfg: TrainConfig, contract: FeatureContract) -> DiTConfig:
    """The preset sized to the data: audio channels, video dim, phoneme vocabulary, longest clip."""
    sized = {"audio_dim": contract.audio_dim(cfg.audio_repr), "audio_fps": contract.audio_fps,
             "video_dim": contract.video_dim, "video_fps": contract.video_fps,
             "phone_vocab_size": contract.vocab_size,
             "max_video_frames": int(round(contract.max_seconds * contract.video_fps))}
    return preset(cfg.preset, **{**sized, **cfg.model_overrides})
