"""The temporal streams inside the network: each stream's frames, already at the audio frame rate (model/batch.py
`resample_stream`), become a vector per audio frame that is concatenated to the noisy audio and the phonemes.

- mouth crops (grey uint8 [H, W] per frame) go through a small trainable per-frame conv stack (`CropFrontEnd`);
- encoder features ([D] per frame) through a linear projection (`FeatureProjection`).

A frame whose stream is missing (masked: no face found, a task without the stream, a condition dropped for
classifier-free guidance) gets the stream's learned `absent` vector instead, so "no lips here" is a signal the
network can tell from "closed lips". Only valid frames go through the front-end: padding and absent streams cost
nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import DiTConfig


class CropFrontEnd(nn.Module):
    """Grey crops [N, H, W] uint8 -> [N, dim]: four stride-2 convolutions, pooled to 4x4, then linear."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        c = channels
        self.convs = nn.Sequential(
            nn.Conv2d(1, c, 5, stride=2, padding=2), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(4 * c, 4 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.out = nn.Linear(4 * c * 16, dim)

    def forward(self, crops: Tensor) -> Tensor:
        x = crops.to(self.out.weight.dtype)[:, None] / 127.5 - 1.0                        # [N, 1, H, W] in [-1, 1]
        return self.out(self.convs(x))                                                     # [N, dim]


class FeatureProjection(nn.Linear):
    """Encoder features [N, D] -> [N, dim]."""

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features.to(self.weight.dtype))


class StreamEmbed(nn.Module):
    """One stream: frames [B, T, *shape] with mask [B, T] -> [B, T, dim], the `absent` vector where masked."""

    def __init__(self, kind: str, shape: list[int], dim: int, frontend_channels: int):
        super().__init__()
        self.shape = tuple(shape)
        self.encode = CropFrontEnd(frontend_channels, dim) if kind == "crops" else FeatureProjection(shape[0], dim)
        self.absent = nn.Parameter(torch.zeros(dim))

    def forward(self, frames: Tensor | None, mask: Tensor | None, batch: int, length: int, like: Tensor) -> Tensor:
        out = self.absent.to(like.dtype).expand(batch, length, -1).clone()                 # [B, T, dim]
        if frames is None or mask is None:
            return out
        if tuple(frames.shape) != (batch, length, *self.shape) or mask.shape != (batch, length):
            raise ValueError(f"stream frames must be [{batch}, {length}, {', '.join(map(str, self.shape))}] with a "
                             f"[{batch}, {length}] mask, got {tuple(frames.shape)} and {tuple(mask.shape)}")
        valid = mask.bool()
        if valid.any():
            out[valid] = self.encode(frames[valid]).to(like.dtype)                         # [N_valid, dim]
        return out


def stream_embeds(cfg: DiTConfig) -> nn.ModuleDict:
    """The embedding of every stream the config names, by name."""
    return nn.ModuleDict({name: StreamEmbed(s["kind"], s["shape"], int(s["dim"]), cfg.frontend_channels)
                          for name, s in sorted(cfg.streams.items())})


def streams_width(cfg: DiTConfig) -> int:
    """The channels the streams add to the per-frame concatenation."""
    return sum(int(s["dim"]) for s in cfg.streams.values())
