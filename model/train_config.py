"""What a training run is configured with (`TrainConfig`), how its preset fills in what the config leaves unset, and
the network that configuration implies for some data.

Training defaults live with the presets (model/config.py TRAINING_DEFAULTS: lr, warm-up, betas, EMA decay, batch
size): a TrainConfig leaves those fields None unless the config file or a flag sets them, and `resolve_training`
fills them in from its preset before the run starts. A warm-up that comes from the preset is capped at
WARMUP_MAX_SHARE of the run; one that was set explicitly is kept, and `schedule_notes` says when it will not finish.
The resolved config is what the checkpoint records; a resumed run takes its unset fields from there, and may change
only the fields in `model.checkpoint.RESUMABLE_CHANGES`. The YAML of `pipeline run pretrain --config` holds these
fields; values of the wrong type are refused with the field's name (numbers written as strings, as YAML 1.1 reads
`1e-4`, are read as numbers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from model.config import PRESETS, TRAINING_DEFAULTS, DiTConfig, TrainingDefaults, preset
from stages.format.contract import AUDIO_REPRS, FeatureContract

PRESET_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingDefaults))
WARMUP_MAX_SHARE = 0.1      # a preset's warm-up takes at most this share of the run's steps
EXTRA_CONDITIONS = ("lip", "sync", "speaker")   # conditions besides text and CLIP a model may be built for


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
    conditions: Optional[list] = None                       # extra conditions the model takes (lip, sync, speaker);
                                                            # None: every one the training data carries
    # optimisation; None: the preset's (model/config.py TRAINING_DEFAULTS), filled in by resolve_training
    batch_size: Optional[int] = None                        # samples per step and training process
    steps: int = 100_000
    lr: Optional[float] = None
    warmup_steps: Optional[int] = None                      # linear warm-up, then constant
    weight_decay: float = 0.0
    betas: Optional[tuple] = None                           # AdamW's (beta1, beta2)
    grad_clip: float = 1.0
    ema: bool = True                                        # keep an EMA of the weights (model/ema.py)
    ema_decay: Optional[float] = None                       # its decay once warmed up
    # conditioning dropout (classifier-free guidance) and masking
    p_drop_all: float = 0.1
    p_drop_video: float = 0.0
    p_drop_text: float = 0.0
    p_drop_streams: float = 0.0                             # the temporal streams (lip, sync), per sample
    p_drop_speaker: float = 0.0                             # the speaker token, per sample
    video_frame_mask_p: float = 0.0                         # mask each video frame independently (fine-tuning)
    stream_batch_mask_p: float = 0.0                        # mask the temporal streams of a whole batch (fine-tuning)
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
        object.__setattr__(self, "model_overrides", self.model_overrides or {})   # an empty YAML key reads as None
        for name, value in _typed_values(self).items():
            object.__setattr__(self, name, value)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        unknown = sorted(set(self.model_overrides) - {f.name for f in dataclasses.fields(DiTConfig)})
        if unknown:
            raise ValueError(f"model_overrides has unknown DiTConfig fields {unknown}")
        if self.audio_repr not in AUDIO_REPRS:
            raise ValueError(f"audio_repr must be one of {AUDIO_REPRS}, got {self.audio_repr!r}")
        for name in ("log_every", "eval_every", "save_every", "epoch_steps", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("steps", "warmup_steps", "num_workers", "val_samples"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("p_drop_all", "p_drop_video", "p_drop_text", "p_drop_streams", "p_drop_speaker",
                     "video_frame_mask_p", "stream_batch_mask_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay} (ema: false turns the EMA off)")
        if self.betas is not None and (len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        unknown = sorted(set(self.conditions or ()) - set(EXTRA_CONDITIONS))
        if unknown:
            raise ValueError(f"conditions {unknown} unknown; the extra conditions are {', '.join(EXTRA_CONDITIONS)}")
        if (self.lr is not None and not self.lr > 0) or not self.grad_clip > 0:
            raise ValueError(f"lr and grad_clip must be > 0, got {self.lr} and {self.grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = None if self.betas is None else list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------------------
# Types: each field's value checked (and numbers read from strings) against its annotation


def _typed_values(cfg: TrainConfig) -> dict[str, Any]:
    """Every field's value as its annotation's type; a ValueError names the first field that has another type."""
    hints = get_type_hints(TrainConfig)
    return {f.name: _typed(f.name, getattr(cfg, f.name), hints[f.name]) for f in dataclasses.fields(cfg)}


def _typed(name: str, value: Any, hint: Any) -> Any:
    if get_origin(hint) is Union:                                  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(name, value, hint)
    if hint is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of names, got {value!r}")
        return list(value)
    if hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list of numbers, got {value!r}")
        return tuple(_number(f"{name}[{i}]", v, float) for i, v in enumerate(value))
    if not isinstance(value, hint):
        raise ValueError(f"{name} must be a {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _number(name: str, value: Any, kind: type) -> int | float:
    """value as an int or a finite float; strings that spell a number are read (YAML 1.1 reads 1e-4 as a string)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if kind is int:
        if number != int(number):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return float(number)


# ----------------------------------------------------------------------------------------------------------------------
# Resolving what the preset decides


def resolve_training(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, str]]:
    """cfg with every unset training field (PRESET_FIELDS) taken from its preset's TrainingDefaults, and where each of
    those came from: "preset", "preset (capped: ...)" for a preset's warm-up cut to WARMUP_MAX_SHARE of the run, or
    "set" (by the config or a flag)."""
    defaults = TRAINING_DEFAULTS[cfg.preset]
    values, origins = {}, {}
    for name in PRESET_FIELDS:
        origins[name] = "set" if getattr(cfg, name) is not None else "preset"
        if origins[name] == "preset":
            values[name] = getattr(defaults, name)
    cap = math.ceil(WARMUP_MAX_SHARE * cfg.steps)
    if origins["warmup_steps"] == "preset" and values["warmup_steps"] > cap:
        values["warmup_steps"] = cap
        origins["warmup_steps"] = (f"preset ({defaults.warmup_steps}, capped at {WARMUP_MAX_SHARE:.0%} of the "
                                   f"{cfg.steps} steps)")
    return dataclasses.replace(cfg, **values), origins


def adopt_resolved(cfg: TrainConfig, stored: dict[str, Any]) -> TrainConfig:
    """cfg with its unset training fields taken from a checkpoint's resolved config (a resumed run keeps them)."""
    values = {name: stored[name] for name in PRESET_FIELDS
              if getattr(cfg, name) is None and stored.get(name) is not None}
    return dataclasses.replace(cfg, **values)


def schedule_notes(cfg: TrainConfig) -> list[str]:
    """Warnings about a resolved config's schedule: a warm-up that the run ends before finishing."""
    if cfg.warmup_steps <= cfg.steps:
        return []
    return [f"warm-up of {cfg.warmup_steps} steps is longer than the run ({cfg.steps} steps): the learning rate "
            f"ends at {cfg.steps / cfg.warmup_steps:.0%} of lr {cfg.lr:g} (lower warmup_steps, or leave it unset "
            f"for the preset's, capped at {WARMUP_MAX_SHARE:.0%} of the run)"]


def training_summary(cfg: TrainConfig, origins: dict[str, str]) -> dict[str, Any]:
    """What a resolved run trains with, for its summary and report: the preset-dependent values and where each came
    from, the EMA, the learning-rate schedule in words, and the schedule's warnings."""
    values = {name: list(cfg.betas) if name == "betas" else getattr(cfg, name) for name in PRESET_FIELDS}
    if cfg.warmup_steps > cfg.steps:
        schedule = (f"lr {cfg.lr:g}: linear warm-up over {cfg.warmup_steps} steps, cut off by the run's end at step "
                    f"{cfg.steps} ({cfg.steps / cfg.warmup_steps:.0%} of lr)")
    elif cfg.warmup_steps:
        schedule = (f"lr {cfg.lr:g}: linear warm-up over steps 1-{cfg.warmup_steps}, then constant to step "
                    f"{cfg.steps}")
    else:
        schedule = f"lr {cfg.lr:g}, constant over {cfg.steps} steps"
    return {"preset": cfg.preset, "values": values, "origins": dict(origins), "ema": cfg.ema,
            "schedule": schedule, "notes": schedule_notes(cfg)}


def model_config_for(cfg: TrainConfig, contract: FeatureContract) -> DiTConfig:
    """The preset sized to the data: audio channels, video dim, phoneme vocabulary, longest clip, and the extra
    conditions the data carries (or those of `cfg.conditions`): each temporal stream with its frames' kind and
    shape, the speaker token with its size."""
    carried = sorted(contract.streams or {}) + (["speaker"] if contract.speaker else [])
    wanted = carried if cfg.conditions is None else sorted(cfg.conditions)
    missing = [c for c in wanted if c not in carried]
    if missing:
        raise ValueError(f"conditions {missing} asked for, but the training data carries only "
                         f"{', '.join(carried) or 'text and video'}: re-extract with them or leave them out")
    base = preset(cfg.preset, **cfg.model_overrides)
    streams = {}
    for name in (c for c in wanted if c != "speaker"):
        record = contract.streams[name]
        kind = "crops" if record["dtype"] == "uint8" else "features"
        streams[name] = {"kind": kind, "shape": list(record["frame_shape"]), "dim": base.stream_dim(name)}
    sized = {"audio_dim": contract.audio_dim(cfg.audio_repr), "audio_fps": contract.audio_fps,
             "video_dim": contract.video_dim, "video_fps": contract.video_fps,
             "phone_vocab_size": contract.vocab_size,
             "max_video_frames": int(round(contract.max_seconds * contract.video_fps)),
             "streams": streams, "ref_token": "speaker" in wanted}
    if contract.speaker:
        sized["ref_dim"] = int(contract.speaker["dim"])
    return preset(cfg.preset, **{**sized, **cfg.model_overrides})
