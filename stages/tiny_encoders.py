"""Tiny randomly initialised lip, sync and speaker encoders, saved as real encoder directories (tests, bench, demo).

They follow the interfaces of `stages.encoder_dir` exactly and are written with `torch.jit.save`, so the stages
load them the way they load a real AV-HuBERT, Synchformer or RawNet3 export. config.json says `random_init: true`
and the contract records it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stages.encoder_dir import MODEL_FILE


def _save(module, out_dir: str | os.PathLike, config: dict) -> Path:
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module.eval()), str(out / MODEL_FILE))
    (out / "config.json").write_text(json.dumps({**config, "random_init": True}, indent=2))
    return out


def make_tiny_lip_encoder(out_dir: str | os.PathLike, *, dim: int = 16, input_size: int = 88, seed: int = 0) -> Path:
    import torch
    from torch import nn

    class TinyLip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 5, stride=4)
            self.proj = nn.Linear(8, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:          # [B, T, 1, S, S]
            b, t = x.shape[0], x.shape[1]
            h = torch.relu(self.conv(x.flatten(0, 1))).mean(dim=(2, 3))  # [B*T, 8]
            return self.proj(h).view(b, t, -1)                        # [B, T, dim]

    torch.manual_seed(seed)
    return _save(TinyLip(), out_dir, {"kind": "lip", "dim": dim, "input_size": input_size, "mean": 0.421,
                                      "std": 0.165, "name": "tiny-lip"})


def make_tiny_sync_encoder(out_dir: str | os.PathLike, *, dim: int = 8, input_size: int = 64, fps: float = 25.0,
                           window: int = 16, seed: int = 0) -> Path:
    import torch
    from torch import nn

    class TinySync(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 8, stride=8)
            self.proj = nn.Linear(5, dim)

        def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:  # [B, W, 3, S, S], [B, N]
            b, w = frames.shape[0], frames.shape[1]
            v = torch.relu(self.conv(frames.flatten(0, 1))).mean(dim=(2, 3)).view(b, w, 4)   # [B, W, 4]
            a = audio.view(b, w, -1).pow(2).mean(dim=2, keepdim=True).add(1e-8).log()        # [B, W, 1]
            return self.proj(torch.cat([v, a], dim=2))                                        # [B, W, dim]

    torch.manual_seed(seed)
    return _save(TinySync(), out_dir, {"kind": "sync", "dim": dim, "input_size": input_size, "fps": fps,
                                       "window": window, "name": "tiny-sync"})


def make_tiny_speaker_encoder(out_dir: str | os.PathLike, *, dim: int = 256, seed: int = 0) -> Path:
    import torch
    from torch import nn

    class TinySpeaker(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 16, 400, stride=160)
            self.proj = nn.Linear(16, dim)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:         # [B, N]
            h = torch.relu(self.conv(wave.unsqueeze(1))).mean(dim=2)   # [B, 16]
            e = self.proj(h)
            return e / e.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8)   # [B, dim]

    torch.manual_seed(seed)
    return _save(TinySpeaker(), out_dir, {"kind": "speaker", "dim": dim, "name": "tiny-speaker"})


def make_tiny_hf_lip_encoder(out_dir: str | os.PathLike, *, dim: int = 16, input_size: int = 88, window: int = 8,
                             seed: int = 0) -> Path:
    """A tiny randomly initialised VideoMAE (one grey channel, one frame per tubelet) in the Hugging Face layout."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    config = VideoMAEConfig(image_size=input_size, patch_size=input_size // 4, num_channels=1, num_frames=window,
                            tubelet_size=1, hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=2 * dim, use_mean_pooling=False)
    config.vssflow = {"kind": "lip", "dim": dim, "input_size": input_size, "mean": 0.421, "std": 0.165,
                      "name": "tiny-videomae-lip", "random_init": True}
    out = Path(out_dir)
    VideoMAEModel(config).save_pretrained(out, safe_serialization=True)
    return out
