"""Sound tracks: the onsets a v2s shape lands on, the bursts of its class's sound there, room tone, channels."""

from __future__ import annotations

import numpy as np

from pipeline.demo.sample_corpus.plan import SoundClass

# Onset timing of v2s sounds (seconds): first burst, gaps between bursts, decay of a burst.
FIRST_ONSET_S = (0.1, 0.35)
ONSET_GAP_S = (0.4, 0.8)
SOUND_DECAY_S = 0.12


def random_onsets(rng: np.random.Generator, duration_s: float) -> list[float]:
    """Burst times (s, rounded to 0.1 ms), the last at least 0.15 s before the end."""
    onsets = [float(rng.uniform(*FIRST_ONSET_S))]
    while True:
        nxt = onsets[-1] + float(rng.uniform(*ONSET_GAP_S))
        if nxt > duration_s - 0.15:
            return [round(t, 4) for t in onsets]
        onsets.append(nxt)


def sound_track(cls: SoundClass, onsets: list[float], duration_s: float, sr: int,
                rng: np.random.Generator) -> np.ndarray:
    """[n] float32: a percussive burst of the class's sound at every onset, over a faint noise floor."""
    n = int(round(duration_s * sr))
    out = np.zeros(n, np.float64)
    for on in onsets:
        i0 = int(round(on * sr))
        if i0 >= n:
            continue
        dt = np.arange(min(n - i0, sr)) / sr
        env = (1 - np.exp(-dt / 0.002)) * np.exp(-dt / SOUND_DECAY_S)
        if cls.tone_hz is None:
            wave = rng.standard_normal(len(dt)) * 0.5
        else:
            wave = sum(a * np.sin(2 * np.pi * cls.tone_hz * (k + 1) * dt)
                       for k, a in enumerate(cls.harmonics) if a and cls.tone_hz * (k + 1) < sr / 2)
        out[i0:i0 + len(dt)] += env * wave
    out *= 0.7 / max(np.abs(out).max(), 1e-9)
    out += 0.001 * rng.standard_normal(n)
    return out.astype(np.float32)


def room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] float32: faint noise, so that no track is digitally silent."""
    return (0.001 * rng.standard_normal(n)).astype(np.float32)


def spread(mono: np.ndarray, channels: int) -> np.ndarray:
    """[n] -> [n, channels]: the same signal at different gains (a panned, not silent, layout)."""
    gains = np.array([1.0, 0.8, 0.9, 0.4, 0.6, 0.6, 0.5, 0.5][:channels], np.float32)
    return mono[:, None] * gains[None, :]
