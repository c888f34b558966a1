"""Visual features at 10 fps from a CLIP vision tower loaded from a local directory.

Encoders are pluggable by name (`ENCODERS`). The only production encoder is CLIP through transformers
(default `openai/clip-vit-base-patch16`, 768-d). `feature` picks what a frame becomes: `pooler_output` (the class
token after the final layer norm, the default: what every output made so far holds, so it stays comparable with
them and with checkpoints trained on them) or `cls_pre_ln` (the class token before that layer norm, as VSSFlow's
reference code takes it). `make_tiny_clip` builds a small randomly
initialised CLIP of the same interface for tests and the demo; its config carries
`vssflow_random_init: true` and `dataset.json` says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from stages.base import Row, Stage
from stages.device import cpu_supports_bf16, pick_device
from stages.model_dir import ModelDirError, check_model_dir, read_model_config

CLIP_MODEL_TYPES = ("clip", "clip_vision_model")   # a whole CLIP model, or its vision tower alone
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FEATURES = ("pooler_output", "cls_pre_ln")


def describe_clip_dir(model_dir: str | os.PathLike) -> dict:
    """The architecture of a CLIP directory as the feature contract records it, read from config.json alone."""
    from transformers import CLIPVisionConfig

    path = check_model_dir(model_dir, "visual model")
    kind = read_model_config(path, "visual model").get("model_type")
    if kind not in CLIP_MODEL_TYPES:   # transformers would read any config.json as a default-sized CLIP
        raise ModelDirError(f"visual model {path} is a {kind!r} model (config.json model_type); the visual "
                            f"encoder is a CLIP model ({' or '.join(CLIP_MODEL_TYPES)})")
    vision = CLIPVisionConfig.from_pretrained(str(path), local_files_only=True)
    return {"dim": int(vision.hidden_size), "image_size": int(vision.image_size),
            "layers": int(vision.num_hidden_layers), "patch_size": int(vision.patch_size),
            "random_init": bool(getattr(vision, "vssflow_random_init", False))}


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
    placement: str = "auto"         # auto: "split" when the cluster has GPUs, else "fused" (pipeline/jobs/extract.py)
    feature: str = "pooler_output"  # or "cls_pre_ln": the class token before the final layer norm (the reference's)

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"visual.feature must be one of {FEATURES}, not {self.feature!r}")
        if self.placement not in ("auto", "split", "fused"):
            raise ValueError(f"placement must be auto, split or fused, not {self.placement!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        for name in ("batch_frames", "rows_per_batch", "num_threads", "actors"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


class ClipEncoder:
    """CLIP vision tower -> class-token features [N, hidden_size]: after the final layer norm (pooler_output) or
    before it (cls_pre_ln)."""

    name: ClassVar[str] = "clip"

    def __init__(self, model_dir: str, *, device: str = "auto", precision: str = "auto",
                 feature: str = "pooler_output"):
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per worker per load is noise; jobs show their own progress
        if feature not in FEATURES:
            raise ValueError(f"visual feature must be one of {FEATURES}, not {feature!r}")
        self.feature = feature
        self.model_dir = str(check_model_dir(model_dir))
        self.device = pick_device(device)
        self.config = CLIPVisionConfig.from_pretrained(self.model_dir, local_files_only=True)
        self.model = CLIPVisionModel.from_pretrained(self.model_dir, local_files_only=True,
                                                     use_safetensors=True).to(self.device).eval()
        if precision == "auto":
            precision = "bf16" if (self.device == "cuda" or cpu_supports_bf16()) else "fp32"
        self.precision = precision
        mean, std = self._normalisation()
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def _normalisation(self):
        processor = Path(self.model_dir) / "preprocessor_config.json"
        if processor.is_file():
            cfg = json.loads(processor.read_text())
            return tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))
        return CLIP_MEAN, CLIP_STD

    @property
    def dim(self) -> int:
        return int(self.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def info(self) -> dict:
        return {
            "name": self.name,
            "model_dir": self.model_dir,
            "dim": self.dim,
            "image_size": self.image_size,
            "feature": self.feature,
            "precision": self.precision,
            "random_init": bool(getattr(self.config, "vssflow_random_init", False)),
        }

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> float32 [N, D]."""
        import torch

        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)  # [N, 3, S, S]
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                                antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            out = self.model(pixel_values=x)
            # last_hidden_state is the encoder's output before post_layernorm; pooler_output is its class token after
            out = out.pooler_output if self.feature == "pooler_output" else out.last_hidden_state[:, 0]  # [N, D]
        return out.float().cpu().numpy()


ENCODERS = {ClipEncoder.name: ClipEncoder}


def load_encoder(name: str, model_dir: str, **kwargs):
    if name not in ENCODERS:
        raise ValueError(f"unknown visual encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name](model_dir, **kwargs)


def make_tiny_clip(out_dir: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """A small randomly initialised CLIP vision tower in the Hugging Face layout (tests and the demo only)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=hidden_size)
    config.vssflow_random_init = True
    out = Path(out_dir)
    CLIPVisionModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def encode_in_fixed_chunks(encoder, frames: np.ndarray, chunk: int) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float32 [N, D], always `chunk` frames per encoder call (the last one padded with black
    frames). A linear-algebra library may pick its kernel by the batch's shape, so a frame's features would otherwise
    depend on how many frames its neighbours brought; with one shape a clip's features are the same bits whichever
    clips share its batch (extract, resume, generate)."""
    out = []
    for start in range(0, len(frames), chunk):
        part = frames[start:start + chunk]
        n = len(part)
        if n < chunk:
            part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
        out.append(encoder.encode(part)[:n])
    return np.concatenate(out)


class VisualEncoderStage(Stage):
    """row["frames"] uint8 [T, S, S, 3] -> row["video"] float16 [T, D]; frames are dropped afterwards.

    Frames of all rows in the batch are encoded together in chunks of `batch_frames`, so small clips
    still fill the encoder's batch; every chunk has that size (`encode_in_fixed_chunks`).
    """

    name = "visual"

    def __init__(self, *, encoder: str = "clip", model_dir: str, batch_frames: int = 64, device: str = "auto",
                 precision: str = "auto", num_threads: Optional[int] = None, feature: str = "pooler_output"):
        super().__init__()
        self.feature = feature
        self.encoder_name, self.model_dir = encoder, str(model_dir)
        self.batch_frames, self.device, self.precision = batch_frames, device, precision
        self.num_threads = num_threads
        self.encoder = None

    def setup(self) -> None:
        import torch

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self.encoder = load_encoder(self.encoder_name, self.model_dir, device=self.device, precision=self.precision,
                                    feature=self.feature)

    def process_batch(self, rows: list[Row]) -> None:
        with_frames = [r for r in rows if r.get("frames") is not None]
        for r in rows:
            if r.get("frames") is None:
                r["video"] = None
        if not with_frames:
            return
        frames = np.concatenate([r["frames"] for r in with_frames])  # [sum T, S, S, 3]
        feats = encode_in_fixed_chunks(self.encoder, frames, self.batch_frames)  # [sum T, D]
        offset = 0
        for r in with_frames:
            n = len(r["frames"])
            r["video"] = feats[offset:offset + n].astype(np.float16)
            offset += n
            r["frames"] = None
