"""The talking face of visual_tts and joint clips: a real photographed face, and a mouth that opens with the speech.

The face is the astronaut portrait that ships inside scikit-image (`skimage.data.astronaut`, public domain), so a
real face detector finds it (the mouth stream's OpenCV cascade does not fire on drawn cartoons). Its tint, side
(mirrored or not) and background follow the voice (plan.VOICES), so speaker and face agree. Its lips are painted
over the photo's smile: closed lips, and a dark opening whose height is the speech loudness around the frame's
time (mouth_track), closed in the pauses between phrases: what a lip reader, and a model, can learn to read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipeline.demo.sample_corpus.draw import HEIGHT, WIDTH, draw_sound_object, ellipse
from pipeline.demo.sample_corpus.plan import VOICES, SoundClass

# Per voice, in VOICES order.
SKINS = [(235, 195, 160), (200, 150, 110), (160, 110, 80), (240, 210, 180)]
BACKGROUNDS = [(170, 200, 230), (200, 230, 190), (230, 210, 170), (210, 190, 230)]
TINTS = [(1.0, 1.0, 1.0), (1.05, 0.95, 0.9), (0.85, 0.8, 0.75), (1.0, 0.97, 1.05)]
MIRRORED = [False, True, False, True]

HEAD_BOX = (20, 220, 140, 320)   # rows y0:y1, columns x0:x1 of the astronaut portrait: hair to chin
HEAD_MOUTH = (85.0, 126.0)      # mouth centre (x, y) inside that crop
HEAD_SCALE = 0.55               # portrait pixels -> canvas pixels at face scale s = 1 (a face box of ~52 px)


@dataclass
class Face:
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    blinks_s: list[float] = field(default_factory=list)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mirrored: bool = False


@dataclass(frozen=True)
class BouncingShape:
    """A v2s shape drawn beside the face (joint clips): its sound class and the onsets it lands on."""

    cls: SoundClass
    onsets_s: list[float]


def face_for(voice: str, rng: np.random.Generator, duration_s: float) -> Face:
    """The face of a voice, blinking every 1.5 to 3 s."""
    k = VOICES.index(voice) if voice in VOICES else 0
    blinks = list(np.cumsum(rng.uniform(1.5, 3.0, size=int(duration_s / 1.5) + 1)))
    return Face(SKINS[k], BACKGROUNDS[k], [b for b in blinks if b < duration_s], TINTS[k], MIRRORED[k])


@functools.lru_cache(maxsize=8)
def portrait(s: float, tint: tuple, mirrored: bool) -> np.ndarray:
    """uint8 [h, w, 3]: the packaged astronaut's head at face scale s, tinted and maybe mirrored."""
    import cv2
    from skimage import data

    y0, y1, x0, x1 = HEAD_BOX
    head = data.astronaut()[y0:y1, x0:x1].astype(np.float32) * np.asarray(tint, np.float32)
    if mirrored:
        head = head[:, ::-1]
    k = HEAD_SCALE * s
    size = (int(round((x1 - x0) * k)), int(round((y1 - y0) * k)))
    return cv2.resize(np.clip(head, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)


def draw_face(img: np.ndarray, face: Face, t: float, mouth_open: float, *, cx: float, cy: float, s: float) -> None:
    """The portrait of scale s centred at (cx, cy); painted lips whose dark opening grows with `mouth_open`."""
    head = portrait(s, face.tint, face.mirrored)
    h, w = head.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    ys, xs = slice(max(y0, 0), min(y0 + h, img.shape[0])), slice(max(x0, 0), min(x0 + w, img.shape[1]))
    img[ys, xs] = head[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    k = HEAD_SCALE * s
    mx = HEAD_MOUTH[0] if not face.mirrored else (HEAD_BOX[3] - HEAD_BOX[2]) - HEAD_MOUTH[0]
    mx, my = x0 + mx * k, y0 + HEAD_MOUTH[1] * k
    img[ellipse(mx, my, 24 * k, 9 * k)] = (150, 75, 80)            # closed lips over the photo's smile
    if mouth_open > 0.08:
        img[ellipse(mx, my, 19 * k, 12 * mouth_open * k)] = (40, 10, 15)


def mouth_track(speech: np.ndarray, sr: int, times_s: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] per frame time: the speech RMS in a 50 ms window, relative to its loudest."""
    half = int(0.025 * sr)
    centres = np.clip((times_s * sr).astype(int), 0, len(speech))
    rms = np.array([np.sqrt(np.mean(speech[max(c - half, 0):c + half] ** 2)) if c < len(speech) else 0.0
                    for c in centres])
    ref = max(float(rms.max()), 1e-9)
    opening = np.clip(rms / (0.6 * ref), 0.0, 1.0)
    opening[rms < 0.1 * ref] = 0.0
    return opening


def talking_frames(face: Face, times_s: np.ndarray, opening: np.ndarray, sway: float,
                   beside: Optional[BouncingShape] = None) -> np.ndarray:
    """[N, H, W, 3] uint8: the face swaying sideways, mouth `opening` [N]; with `beside`, smaller, left of it."""
    frames = np.empty((len(times_s), HEIGHT, WIDTH, 3), np.uint8)
    for i, t in enumerate(times_s):
        frames[i] = face.background
        dx = 3 * np.sin(2 * np.pi * t / 2.5 + sway)
        if beside is not None:
            frames[i, HEIGHT - 10:, 100:] = (90, 90, 90)
            draw_sound_object(frames[i], beside.cls, float(t), beside.onsets_s, x_s=132, floor_y=HEIGHT - 10,
                              r=10, lift=45)
            draw_face(frames[i], face, float(t), float(opening[i]), cx=52 + dx, cy=62, s=0.75)
        else:
            draw_face(frames[i], face, float(t), float(opening[i]), cx=80 + dx, cy=58, s=1.0)
    return frames
