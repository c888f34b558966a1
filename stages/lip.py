"""The mouth-region stream `lip` (25 fps, visual_tts and joint rows): mouth crops, or a local encoder's features.

`MouthStage` (CPU, beside decode): row["lip_frames"] grey [T, h, w] at lip fps -> row["lip"] uint8 [T, S, S] mouth
crops and row["lip_valid"] uint8 [T] (1 where the face was found; crops are zero elsewhere). A visual_tts row whose
face is found in under `min_face_share` of its frames is rejected `no_face` (joint clips keep their flags: a
sound scene need not show the speaker all the time).

`LipEncoderStage` (with the other encoders, `--lip-model DIR`): crops -> float16 [T, dim] features of a local
TorchScript encoder (input [B, T, 1, S, S], `stages.encoder_dir`); rows of invalid frames stay as the encoder maps
the zero crop, and `lip_valid` says which rows to trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from manifests.tasks import VIDEO_TASKS
from stages.base import Reject, Row, Stage
from stages.format import rates

LIP_TASKS = ("joint", "visual_tts")
ROIS = ("detect", "fixed")


@dataclass(frozen=True, kw_only=True)
class LipConfig:
    enabled: bool = True
    fps: float = rates.LIP_FPS
    roi: str = "detect"               # detect: the packaged face detector, tracked; fixed: `box` on every frame
    box: Optional[list] = None        # fixed: mouth box [x, y, w, h] as shares of the frame's width and height
    crop_size: int = 88               # grey crops of crop_size x crop_size
    max_side: int = 480               # frames are searched at most this large (longer side), aspect kept
    detect_fps: float = 5.0           # detections per second; boxes in between are interpolated
    smooth_s: float = 0.6             # moving average of the tracked face box over this window
    min_face_share: float = 0.5       # a visual_tts row with the face in fewer frames is rejected no_face
    model_dir: Optional[str] = None   # --lip-model: a local TorchScript lip encoder; None stores the crops
    batch_frames: int = 256           # frames per encoder call

    def __post_init__(self) -> None:
        if self.roi not in ROIS:
            raise ValueError(f"lip.roi must be one of {ROIS}, got {self.roi!r}")
        if self.roi == "fixed":
            box = self.box
            if not (isinstance(box, list) and len(box) == 4 and all(0 <= float(v) <= 1 for v in box)
                    and box[2] > 0 and box[3] > 0):
                raise ValueError(f"lip.roi fixed needs lip.box [x, y, w, h] as shares of the frame in [0, 1], got "
                                 f"{box!r}")
        if not (self.fps > 0 and self.detect_fps > 0 and self.smooth_s >= 0 and 0 <= self.min_face_share <= 1):
            raise ValueError("lip: fps and detect_fps must be > 0, smooth_s >= 0, min_face_share in [0, 1]")
        if self.crop_size < 8 or self.max_side < 32 or self.batch_frames < 1:
            raise ValueError("lip: crop_size >= 8, max_side >= 32 and batch_frames >= 1 are needed")

    def frame_need(self):
        from stages.frames import FrameNeed

        return FrameNeed("lip_frames", self.fps, "grey", self.max_side, tasks=LIP_TASKS)


class MouthStage(Stage):
    """Grey frames -> mouth crops and per-frame validity (see the module docstring)."""

    name = "lip"

    def __init__(self, *, config: LipConfig = LipConfig()):
        super().__init__()
        self.config = config
        self.detector = None

    def setup(self) -> None:
        from stages.mouth import load_face_detector

        if self.config.roi == "detect":
            self.detector = load_face_detector()

    def process(self, row: Row) -> None:
        from stages.mouth import crop, face_boxes, mouth_boxes, mouth_crops

        cfg = self.config
        grey = row.pop("lip_frames", None)
        row["lip"] = row["lip_valid"] = None
        if row["task"] not in LIP_TASKS or row["task"] not in VIDEO_TASKS:
            return
        if grey is None or len(grey) == 0:
            raise Reject("no_face", "no frames were decoded for the mouth stream")
        if cfg.roi == "fixed":
            h, w = grey.shape[1:]
            x, y, bw, bh = cfg.box
            box = (x * w, y * h, bw * w, bh * h)
            row["lip"] = np.stack([crop(g, box, cfg.crop_size) for g in grey])
            row["lip_valid"] = np.ones(len(grey), np.uint8)
            return
        faces, valid = face_boxes(grey, cfg.fps, detect_fps=cfg.detect_fps, smooth_s=cfg.smooth_s,
                                  detector=self.detector)
        share = float(valid.mean())
        row["face_share"] = round(share, 4)
        if row["task"] == "visual_tts" and share < cfg.min_face_share:
            raise Reject("no_face", f"a face was found in {share:.0%} of {len(valid)} frames (min_face_share "
                                    f"{cfg.min_face_share:.0%})")
        row["lip"] = mouth_crops(grey, mouth_boxes(faces), valid, cfg.crop_size)   # [T, S, S] uint8
        row["lip_valid"] = valid


class LipEncoderStage(Stage):
    """row["lip"] uint8 [T, S, S] crops -> float16 [T, dim] features of a local lip encoder (TorchScript or HF)."""

    name = "lip_encoder"

    def __init__(self, *, model_dir: str, batch_frames: int = 256, device: str = "auto"):
        super().__init__()
        self.model_dir, self.batch_frames, self.device = str(model_dir), batch_frames, device

    def setup(self) -> None:
        from stages.device import pick_device
        from stages.encoder_dir import load_encoder

        self.device = pick_device(self.device)
        self.module, cfg = load_encoder(self.model_dir, "lip", self.device)
        self.dim, self.size = int(cfg["dim"]), int(cfg["input_size"])
        self.mean, self.std = float(cfg.get("mean", 0.0)), float(cfg.get("std", 1.0))

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [T, S, S] -> float32 [T, dim]."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(crops).to(self.device).float().div_(255.0).unsqueeze(1)    # [T, 1, S, S]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).unsqueeze(0)                                    # [1, T, 1, S, S]
        with torch.inference_mode():
            out = self.module(x)                                                         # [1, T, dim]
        if tuple(out.shape) != (1, len(crops), self.dim):
            raise RuntimeError(f"lip encoder {self.model_dir} returned {tuple(out.shape)} for "
                               f"{tuple(x.shape)}; its config.json promises [B, T, {self.dim}]")
        return out[0].float().cpu().numpy()

    def process(self, row: Row) -> None:
        crops = row.get("lip")
        if crops is None:
            return
        feats = [self.encode(crops[i:i + self.batch_frames]) for i in range(0, len(crops), self.batch_frames)]
        row["lip"] = np.concatenate(feats).astype(np.float16)                           # [T, dim]
