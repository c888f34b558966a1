"""Finding the mouth in a clip's frames: a face detector that ships inside a package, tracked and smoothed over time.

The detector is OpenCV's bundled frontal-face Haar cascade (`cv2.data.haarcascades`, in opencv-python-headless:
nothing is downloaded). It runs on every k-th frame (`detect_fps`), on grey frames; per detection frame the face
kept is the one that overlaps the face kept before (the track), or the largest when there is none, so a second,
smaller face never takes over. Found boxes are smoothed by a centred moving average over `smooth_s` and
interpolated to every frame; a frame is valid when the detection nearest to it found the face. The mouth is a
square below the face box's centre (`MOUTH_CENTRE`, `MOUTH_SIDE`), cropped with the border replicated where it
leaves the image and resized to crop_size x crop_size.

`roi: fixed` skips the detector: the mouth box comes from the config (face-centred corpora such as LRS2 and GRID),
every frame valid.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from manifests.errors import PipelineError

FACE_CASCADE = "haarcascade_frontalface_default.xml"
MOUTH_CENTRE = (0.5, 0.78)     # of the face box (x, y): the Haar box spans brows to chin
MOUTH_SIDE = 0.55              # mouth square side, as a share of the face box width
MIN_FACE_SHARE_OF_SIDE = 0.12  # smallest face the detector looks for, as a share of the frame's shorter side


class DetectorError(PipelineError, RuntimeError):
    """The packaged face detector could not be loaded."""


def load_face_detector():
    """OpenCV's bundled frontal-face cascade; a DetectorError saying what is missing when it cannot be loaded."""
    import cv2

    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), FACE_CASCADE)
    if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
        raise DetectorError(f"OpenCV {cv2.__version__} has no bundled Haar cascades ({FACE_CASCADE}): install "
                            "opencv-python-headless 4.x (pyproject.toml pins it)")
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise DetectorError(f"OpenCV could not load its face cascade {path}")
    return detector


def detect_faces(detector, grey: np.ndarray) -> np.ndarray:
    """float32 [K, 4] face boxes (x, y, w, h) in one grey frame [H, W]."""
    import cv2

    side = max(24, int(MIN_FACE_SHARE_OF_SIDE * min(grey.shape)))
    found = detector.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=1.1, minNeighbors=4,
                                      minSize=(side, side))
    return np.asarray(found, np.float32).reshape(-1, 4)


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of box a [4] with each of boxes b [K, 4] (x, y, w, h)."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2]), np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[2] * a[3] + b[:, 2] * b[:, 3] - inter)


def track(detections: Sequence[np.ndarray]) -> np.ndarray:
    """float64 [N, 4] the tracked face per detection frame (NaN where none): the box overlapping the previous
    tracked box most, else the largest (the first face, or a face after a cut)."""
    out = np.full((len(detections), 4), np.nan)
    previous: Optional[np.ndarray] = None
    for i, boxes in enumerate(detections):
        if len(boxes) == 0:
            continue
        pick = int(np.argmax(boxes[:, 2] * boxes[:, 3]))
        if previous is not None:
            iou = overlap(previous, boxes)
            if iou.max() > 0.1:
                pick = int(np.argmax(iou))
        out[i] = previous = boxes[pick]
    return out


def smooth(times_s: np.ndarray, boxes: np.ndarray, window_s: float) -> np.ndarray:
    """Centred moving average of the found boxes [N, 4] over window_s (NaN rows stay NaN and are not averaged)."""
    found = ~np.isnan(boxes[:, 0])
    out = boxes.copy()
    for i in np.flatnonzero(found):
        near = found & (np.abs(times_s - times_s[i]) <= window_s / 2)
        out[i] = boxes[near].mean(axis=0)
    return out


def face_boxes(grey: np.ndarray, fps: float, *, detect_fps: float, smooth_s: float,
               detector=None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of grey [T, H, W] at fps: (float64 [T, 4] face boxes, uint8 [T] validity)."""
    n = len(grey)
    step = max(1, int(round(fps / detect_fps)))
    at = np.unique(np.r_[np.arange(0, n, step), n - 1]) if n else np.zeros(0, np.int64)
    detector = detector or load_face_detector()
    tracked = smooth(at / fps, track([detect_faces(detector, grey[i]) for i in at]), smooth_s)
    found = ~np.isnan(tracked[:, 0])
    if not found.any():
        return np.zeros((n, 4)), np.zeros(n, np.uint8)
    frames = np.arange(n)
    nearest = at[np.abs(frames[:, None] - at[None, :]).argmin(axis=1)]          # [T] nearest detection frame
    valid = found[np.searchsorted(at, nearest)].astype(np.uint8)
    boxes = np.stack([np.interp(frames, at[found], tracked[found, k]) for k in range(4)], axis=1)
    return boxes, valid


def mouth_boxes(faces: np.ndarray) -> np.ndarray:
    """float64 [T, 4] square mouth boxes (x, y, side, side) from face boxes [T, 4]."""
    side = MOUTH_SIDE * faces[:, 2]
    cx = faces[:, 0] + MOUTH_CENTRE[0] * faces[:, 2]
    cy = faces[:, 1] + MOUTH_CENTRE[1] * faces[:, 3]
    return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)


def crop(grey: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """uint8 [size, size]: the box (x, y, w, h) of grey [H, W], edge pixels replicated outside the image."""
    import cv2

    x, y, w, h = (float(v) for v in box)
    # An affine map of the box onto the output square; BORDER_REPLICATE fills what lies outside the frame.
    m = np.array([[size / w, 0, -x * size / w], [0, size / h, -y * size / h]], np.float64)
    return cv2.warpAffine(grey, m, (size, size), flags=cv2.INTER_AREA if w > size else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def mouth_crops(grey: np.ndarray, boxes: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, size, size]: each valid frame's mouth; zeros where the face was not found (masked)."""
    out = np.zeros((len(grey), size, size), np.uint8)
    for i in np.flatnonzero(valid):
        out[i] = crop(grey[i], boxes[i], size)
    return out
