"""Pictures on the corpus's small canvas: masks, and the v2s shape that bounces and flashes on every onset.

The shape is what makes v2s learnable: its form and colour say its sound class (plan.SOUND_CLASSES), and it lands
on the floor and flashes at exactly the onsets where sound.sound_track starts a burst.
"""

from __future__ import annotations

import numpy as np

from pipeline.demo.sample_corpus.plan import SoundClass

WIDTH, HEIGHT = 160, 120
FLASH_DECAY_S = 0.15  # long enough that the 10 fps frame after a hit still shows the flash

PIXEL_Y, PIXEL_X = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)  # [H, W] each: the row and column of a pixel


def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """[H, W] bool: the pixels inside the ellipse centred at (cx, cy) with radii rx, ry."""
    return ((PIXEL_X - cx) / rx) ** 2 + ((PIXEL_Y - cy) / max(ry, 1e-3)) ** 2 <= 1.0


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """[H, W] bool: the pixels of a sound class's shape of size r centred at (cx, cy)."""
    dx, dy = PIXEL_X - cx, PIXEL_Y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape in ("square", "hatched"):
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # apex up, base 0.8 r below the centre
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    raise ValueError(f"unknown shape {shape!r}")


def bounce(t: float, onsets: list[float]) -> tuple[float, float]:
    """(height in [0, 1] above the floor, flash in [0, 1]) at time t: the shape lands on every onset."""
    prev = max((o for o in onsets if o <= t), default=None)
    nxt = min((o for o in onsets if o > t), default=None)
    flash = 0.0 if prev is None else float(np.exp(-(t - prev) / FLASH_DECAY_S))
    if nxt is None:
        return 0.0, flash  # resting after the last hit
    start = prev if prev is not None else nxt - 0.6
    gap = nxt - start
    u = (t - start) / gap
    return min(1.0, gap / 0.8) * 4 * u * (1 - u), flash


def draw_sound_object(img: np.ndarray, cls: SoundClass, t: float, onsets: list[float], *,
                      x_s: float, floor_y: float, r: float, lift: float) -> None:
    """Draw into img [H, W, 3] the class's shape at time t, at column x_s, bouncing up to `lift` pixels."""
    height, flash = bounce(t, onsets)
    size = r * (1 + 0.3 * flash)
    cx, cy = x_s, floor_y - size - height * lift
    mask = shape_mask(cls.shape, cx, cy, size)
    colour = np.array(cls.rgb, np.float32) * (0.5 + 0.5 * flash)
    if cls.shape == "hatched":
        stripes = ((PIXEL_X + PIXEL_Y) // 4) % 2 == 0
        img[mask & stripes] = colour.astype(np.uint8)
        img[mask & ~stripes] = (colour * 0.35).astype(np.uint8)
    else:
        img[mask] = colour.astype(np.uint8)


def sound_frames(cls: SoundClass, onsets: list[float], times_s: np.ndarray, rng: np.random.Generator,
                 duration_s: float) -> np.ndarray:
    """[N, H, W, 3] uint8: a shape bouncing on a floor, hitting it (and flashing) at each onset."""
    bg = rng.integers(10, 45, size=3).astype(np.uint8)
    x0, x1 = rng.uniform(40, WIDTH - 40, size=2)
    floor_y = HEIGHT - 12
    frames = np.empty((len(times_s), HEIGHT, WIDTH, 3), np.uint8)
    for i, t in enumerate(times_s):
        img = frames[i]
        img[:] = bg
        img[floor_y:] = (90, 90, 90)
        x = x0 + (x1 - x0) * t / max(duration_s, 1e-3)
        draw_sound_object(img, cls, float(t), onsets, x_s=x, floor_y=floor_y, r=20, lift=50)
    return frames
