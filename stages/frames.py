"""The frames every temporal video stream needs, decoded in one read of the file.

Each stream picks its frames by the same rule at its own rate (row i is the frame on screen at start + i / fps,
`frame_indices_at`); the union of the frames all streams need is decoded once, in chunks, and each
frame is shaped for the streams that use it:

    kind "rgb"   uint8 [T, S, S, 3]  squashed to size x size (the CLIP stream, the synchrony encoder)
    kind "grey"  uint8 [T, h, w]     luma, aspect kept, longer side at most `size` (the mouth stream's detector)

Chunks bound memory whatever the source's resolution: at most `CHUNK_FRAMES` native frames are held at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from manifests.tasks import VIDEO_TASKS
from stages.format import rates

CHUNK_FRAMES = 16
KINDS = ("rgb", "grey")


@dataclass(frozen=True)
class FrameNeed:
    """What one stream reads from the video: row key, rate, kind and size, and the tasks that carry it."""

    key: str                 # the row key the frames go to: "frames" (CLIP), "lip_frames", "sync_frames"
    fps: float
    kind: str                # "rgb" (squashed square) or "grey" (aspect kept)
    size: int                # rgb: the square side; grey: the longest side at most
    tasks: tuple = tuple(sorted(VIDEO_TASKS))

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not self.fps > 0 or self.size < 8:
            raise ValueError(f"bad frame need {self}: kind in {KINDS}, fps > 0, size >= 8")


def frame_indices_at(times_s: np.ndarray, frame_starts_s: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time: the last frame whose presentation starts at or before it."""
    idx = np.searchsorted(frame_starts_s, times_s + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(frame_starts_s) - 1)


def grey_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of a frame scaled down (never up) so that its longer side is at most max_side."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def shape_frames(native: np.ndarray, need: FrameNeed) -> np.ndarray:
    """uint8 [N, H, W, 3] native frames -> the need's frames (see the module docstring)."""
    import cv2

    if need.kind == "rgb":
        if native.shape[1:3] == (need.size, need.size):
            return native.copy()
        interp = cv2.INTER_AREA if max(native.shape[1:3]) > need.size else cv2.INTER_LINEAR
        return np.stack([cv2.resize(f, (need.size, need.size), interpolation=interp) for f in native])
    h, w = grey_shape(native.shape[1], native.shape[2], need.size)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in native]
    if (h, w) != native.shape[1:3]:
        grey = [cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA) for g in grey]
    return np.stack(grey)


def read_stream_frames(read, frame_starts_s: np.ndarray, start_s: float, span_s: float,
                       needs: Sequence[FrameNeed]) -> dict[str, np.ndarray]:
    """{need.key: frames} for every need, decoding the union of their frame indices once, in order.

    `read(indices) -> uint8 [N, H, W, 3]` decodes native frames (stages.media_read.VideoSource.frames).
    """
    wanted = {n.key: frame_indices_at(rates.stream_times(start_s, span_s, n.fps), frame_starts_s) for n in needs}
    union = np.unique(np.concatenate([idx for idx in wanted.values()] or [np.zeros(0, np.int64)]))
    parts: dict[str, list[np.ndarray]] = {n.key: [] for n in needs}
    for c in range(0, len(union), CHUNK_FRAMES):
        chunk = union[c:c + CHUNK_FRAMES]
        native = read(chunk)                                                  # [n, H, W, 3]
        for need in needs:
            rows = wanted[need.key]
            hit = (rows >= chunk[0]) & (rows <= chunk[-1])
            if hit.any():
                positions = np.searchsorted(chunk, rows[hit])
                parts[need.key].append(shape_frames(native[positions], need))
    return {n.key: np.concatenate(parts[n.key]) if parts[n.key] else np.zeros((0,), np.uint8) for n in needs}
