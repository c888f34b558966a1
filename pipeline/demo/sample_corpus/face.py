"""The talking face of visual_tts and joint clips: its look, its blinks, and a mouth that opens with the speech.

A face's colours follow its voice (plan.VOICES), so speaker and face agree; the mouth opening per frame is the
speech loudness around that frame's time (mouth_track), which is what a model can learn to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipeline.demo.sample_corpus.draw import HEIGHT, WIDTH, draw_sound_object, ellipse
from pipeline.demo.sample_corpus.plan import VOICES, SoundClass

# Per voice, in VOICES order.
SKINS = [(235, 195, 160), (200, 150, 110), (160, 110, 80), (240, 210, 180)]
BACKGROUNDS = [(170, 200, 230), (200, 230, 190), (230, 210, 170), (210, 190, 230)]


@dataclass
class Face:
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    blinks_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BouncingShape:
    """A v2s shape drawn beside the face (joint clips): its sound class and the onsets it lands on."""

    cls: SoundClass
    onsets_s: list[float]


def face_for(voice: str, rng: np.random.Generator, duration_s: float) -> Face:
    """The face of a voice, blinking every 1.5 to 3 s."""
    k = VOICES.index(voice) if voice in VOICES else 0
    blinks = list(np.cumsum(rng.uniform(1.5, 3.0, size=int(duration_s / 1.5) + 1)))
    return Face(SKINS[k], BACKGROUNDS[k], [b for b in blinks if b < duration_s])


def draw_face(img: np.ndarray, face: Face, t: float, mouth_open: float, *, cx: float, cy: float, s: float) -> None:
    """A face of scale s centred at (cx, cy); the mouth's dark opening grows with `mouth_open` in [0, 1]."""
    img[ellipse(cx, cy, 36 * s, 45 * s)] = face.skin
    blink = any(0 <= t - b < 0.12 for b in face.blinks_s)
    for ex in (cx - 13 * s, cx + 13 * s):
        img[ellipse(ex, cy - 13 * s, 4 * s, (0.6 if blink else 4) * s)] = (30, 30, 40)
    my = cy + 22 * s
    img[ellipse(cx, my, 14 * s, (2.5 + 9 * mouth_open) * s)] = (170, 80, 90)
    if mouth_open > 0.08:
        img[ellipse(cx, my, 11 * s, 8 * mouth_open * s)] = (50, 10, 20)


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
