"""The synchrony stream `sync` (optional, video tasks): features of a local audio-visual synchrony encoder.

Off unless `sync.model_dir` names a TorchScript directory (`stages.encoder_dir`, kind "sync"). The encoder states
its rate (`fps`), its frame size (`input_size`) and its window (`window` frames): decode picks the frames at that
rate (`stages.frames`, whole frame squashed to input_size), and the clip is encoded in consecutive windows of
frames with the stored audio under them (`window * 16000 / fps` samples); the last window is padded (last frame
repeated, audio zeros) and its padding rows dropped. Output float16 [T, dim], T = frames_in(duration, fps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from manifests.tasks import VIDEO_TASKS
from stages.base import Row, Stage
from stages.format.rates import SAMPLE_RATE

SYNC_TASKS = tuple(sorted(VIDEO_TASKS))


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    model_dir: Optional[str] = None   # --sync-model: a local TorchScript synchrony encoder; None: no sync stream
    device: str = "auto"


def sync_frame_need(info: dict):
    """The frames the synchrony encoder reads (its rate and size), from its contract record."""
    from stages.frames import FrameNeed

    return FrameNeed("sync_frames", float(info["fps"]), "rgb", int(info["input_size"]), tasks=SYNC_TASKS)


class SyncEncoderStage(Stage):
    """row["sync_frames"] uint8 [T, S, S, 3] + the stored audio -> row["sync"] float16 [T, dim]."""

    name = "sync"

    def __init__(self, *, model_dir: str, device: str = "auto"):
        super().__init__()
        self.model_dir, self.device = str(model_dir), device

    def setup(self) -> None:
        from stages.device import pick_device
        from stages.encoder_dir import load_encoder

        self.device = pick_device(self.device)
        self.module, cfg = load_encoder(self.model_dir, "sync", self.device)
        self.dim, self.window, self.fps = int(cfg["dim"]), int(cfg["window"]), float(cfg["fps"])
        per_frame = SAMPLE_RATE / self.fps
        if per_frame != int(per_frame):
            raise ValueError(f"sync encoder {self.model_dir}: fps {self.fps} does not divide {SAMPLE_RATE} Hz")
        self.per_frame = int(per_frame)

    def encode(self, frames: np.ndarray, wave: np.ndarray) -> np.ndarray:
        """uint8 [T, S, S, 3] and float32 audio -> float32 [T, dim], window by window."""
        import torch

        n, w = len(frames), self.window
        padded = -(-n // w) * w
        frames = np.concatenate([frames, np.repeat(frames[-1:], padded - n, axis=0)])    # [T', S, S, 3]
        audio = np.zeros(padded * self.per_frame, np.float32)
        k = min(len(wave), len(audio))
        audio[:k] = wave[:k]
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)  # [T', 3, S, S]
        x = x.view(padded // w, w, *x.shape[1:])                                         # [N_w, W, 3, S, S]
        a = torch.from_numpy(audio).to(self.device).view(padded // w, w * self.per_frame)  # [N_w, W * per_frame]
        with torch.inference_mode():
            out = self.module(x, a)                                                      # [N_w, W, dim]
        if tuple(out.shape) != (padded // w, w, self.dim):
            raise RuntimeError(f"sync encoder {self.model_dir} returned {tuple(out.shape)}, expected "
                               f"{(padded // w, w, self.dim)}")
        return out.reshape(padded, self.dim)[:n].float().cpu().numpy()

    def process(self, row: Row) -> None:
        from stages.audio import decode_flac

        frames = row.pop("sync_frames", None)
        row["sync"] = None
        if frames is None or row["task"] not in SYNC_TASKS:
            return
        wave, _ = decode_flac(row["flac"])
        row["sync"] = self.encode(frames, wave).astype(np.float16)
