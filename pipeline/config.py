"""Job configuration: frozen dataclasses, loaded from YAML (`--config`) and overridden from the command line.

Every default follows DESIGN.md §5; every value is recorded in `dataset.json` and `report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_type_hints

from pipeline.errors import ConfigError
from stages.audio import LoudnessConfig, MelConfig
from stages.decode import DecodeConfig


@dataclass(frozen=True, kw_only=True)
class VisualConfig:
    encoder: str = "clip"
    model_dir: Optional[str] = None
    batch_frames: int = 64          # frames per encoder forward pass
    rows_per_batch: int = 8         # clips handed to one encoder call (frames of all of them are batched)
    precision: str = "auto"         # auto: bf16 on GPU or a CPU with native bf16, else fp32
    device: str = "auto"
    num_threads: Optional[int] = None  # torch threads in a CPU encoder actor; None = every core of the node
    actors: Optional[int] = None    # encoder actor pool size (split placement); None = one per GPU
    placement: str = "auto"         # auto: "split" when the cluster has GPUs, else "fused" (see pipeline/extract.py)


@dataclass(frozen=True, kw_only=True)
class LatentConfig:
    vae_dir: Optional[str] = None   # a diffusers AutoencoderKL directory; None = no latents
    batch_size: int = 8


@dataclass(frozen=True, kw_only=True)
class PhonemeConfig:
    language: str = "en-us"
    with_stress: bool = True
    max_chars: int = 1000
    espeak: str = "auto"            # auto | system | bundled (the espeakng-loader wheel: one release everywhere)


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    phonemes: PhonemeConfig = field(default_factory=PhonemeConfig)
    shard_size: int = 256           # rows per work unit; one unit = one shard
    rows_per_task: int = 4          # rows per Ray call of the CPU stages (decode, audio, phonemes)
    cpu_stage_cpus: float = 1.0     # logical CPUs one CPU-stage worker asks Ray for
    cpu_workers: Optional[int] = None  # fused placement: worker actors; None = cluster CPUs / cpu_stage_cpus


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build a (nested) config dataclass from a plain dict; unknown keys are an error, not ignored."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; "
                          f"known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}" if where else key)
        kwargs[key] = value
    return cls(**kwargs)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
    data[parts[-1]] = value


def load_config(cls, path: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None):
    """Defaults <- YAML file <- overrides ({"visual.model_dir": ...}); None overrides are skipped."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(data, dotted, value)
    return from_dict(cls, data)


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]
