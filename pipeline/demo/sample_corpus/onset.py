"""A V2S corpus for the question "does a short run learn?": the picture decides the pitch and the onset of the sound.

`make_onset_corpus(out_dir)` writes `clips` v2s mp4 files (25 fps, 16 kHz mono, `duration_s` each) under
`out_dir/media/onset/`, a manifest `out_dir/manifest.parquet` and `out_dir/expected.json`. In each clip a shape of
one of the tonal sound classes (plan.SOUND_CLASSES: red circle 220 Hz, green square 440 Hz, blue triangle 880 Hz)
appears on an empty background at `onset_s` and stays for TONE_S seconds; its tone sounds exactly while it is shown.
So what is shown decides the pitch class, and the moment it appears decides the onset.

The last `held_out` clips are split "test" (never trained on). Training onsets are uniform in TRAIN_ONSETS_S; the
held-out onsets lie in HELD_OUT_ONSETS_S, where the training onsets' marginal is flat: a model that ignores the
picture puts as much energy just before a held-out onset as just after it (ratio ~1), so a high ratio can only
come from reading the picture. Classes cycle through clips, so every class is trained and held out equally.

expected.json, per clip: {"outcome": "ok", "task": "v2s", "sound_class", "tone_hz", "onset_s", "end_s",
"duration_s", "split"}.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from manifests.atomic import atomic_write_text
from manifests.schema import Clip, write_manifest
from pipeline.demo.sample_corpus.draw import HEIGHT, WIDTH, shape_mask
from pipeline.demo.sample_corpus.encode import encode_video, find_tools, frame_times
from pipeline.demo.sample_corpus.plan import SOUND_CLASSES, MediaFormat, SoundClass
from pipeline.demo.sample_corpus.sound import room_tone

ONSET_CLASSES = tuple(name for name, cls in SOUND_CLASSES.items() if cls.tone_hz is not None)
MEDIA = MediaFormat("mp4", 16000, 1, "25")
TONE_S = 0.6                      # how long the shape is shown and its tone sounds
TRAIN_ONSETS_S = (0.3, 2.2)       # on a 3 s clip: the tone always ends 0.2 s before the clip does
HELD_OUT_ONSETS_S = (1.0, 2.0)    # marginal of the training tones is flat over [0.9, 2.2]: see the module note
ATTACK_S, RELEASE_S = 0.005, 0.03
# The picture: one background for every clip and a large shape (70 px across on 160 x 120), so that what is shown
# dominates the frame's features: with the tiny random CLIP of the tests, a random background colour per clip and
# a 44-px shape left the classes barely apart (nearest class mean right on 4 of 6 held-out clips, vs 6 of 6 here).
BACKGROUND = (25, 25, 25)
SHAPE_R_PX = 35.0
SHAPE_JITTER_PX = (30.0, 12.0)   # the shape's centre: up to this far from the frame's centre (x, y)


def onset_frames(cls: SoundClass, onset_s: float, end_s: float, times_s: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """[N, H, W, 3] uint8: the empty BACKGROUND, and the class's shape (at a place drawn from rng, then still) shown
    from onset_s to end_s."""
    cx = WIDTH / 2 + rng.uniform(-SHAPE_JITTER_PX[0], SHAPE_JITTER_PX[0])
    cy = HEIGHT / 2 + rng.uniform(-SHAPE_JITTER_PX[1], SHAPE_JITTER_PX[1])
    mask = shape_mask(cls.shape, cx, cy, SHAPE_R_PX)
    bg = np.array(BACKGROUND, np.uint8)
    frames = np.empty((len(times_s), HEIGHT, WIDTH, 3), np.uint8)
    frames[:] = bg
    shown = (times_s >= onset_s) & (times_s < end_s)
    frames[shown] = np.where(mask[..., None], np.array(cls.rgb, np.uint8), bg)      # [H, W, 3] to each
    return frames


def onset_tone(cls: SoundClass, onset_s: float, end_s: float, duration_s: float, sr: int,
               rng: np.random.Generator) -> np.ndarray:
    """[n] float32: the class's tone (with its harmonics) from onset_s to end_s, 5 ms attack, 30 ms release, over
    room tone."""
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    tone = sum(a * np.sin(2 * np.pi * cls.tone_hz * (k + 1) * t)
               for k, a in enumerate(cls.harmonics) if a and cls.tone_hz * (k + 1) < sr / 2)
    env = np.clip((t - onset_s) / ATTACK_S, 0, 1) * np.clip((end_s - t) / RELEASE_S, 0, 1)
    wave = 0.5 * env * tone / max(np.abs(tone).max(), 1e-9)
    return (wave + room_tone(n, rng)).astype(np.float32)


def plan_onset_clips(*, clips: int, held_out: int, seed: int) -> list[dict[str, Any]]:
    """Per clip: clip_id, split, sound class, onset and seed; a pure function of the arguments."""
    if not 0 < held_out < clips:
        raise ValueError(f"held_out must be in (0, clips), got {held_out} of {clips}")
    rng = np.random.default_rng([seed, 0x0E5E7])
    plan = []
    for i in range(clips):
        test = i >= clips - held_out
        low, high = HELD_OUT_ONSETS_S if test else TRAIN_ONSETS_S
        sound = ONSET_CLASSES[i % len(ONSET_CLASSES)]
        plan.append({"clip_id": f"onset_{sound}_{i:03d}", "split": "test" if test else "train", "sound": sound,
                     "onset_s": round(float(rng.uniform(low, high)), 3), "seed": int(rng.integers(2**31))})
    return plan


def make_onset_corpus(out_dir: Path, *, clips: int = 42, held_out: int = 6, seed: int = 0,
                      duration_s: float = 3.0) -> Path:
    """Write the corpus under out_dir (the data root); return the manifest path. See the module note."""
    if duration_s < TRAIN_ONSETS_S[1] + TONE_S + 0.1:
        raise ValueError(f"duration_s must be at least {TRAIN_ONSETS_S[1] + TONE_S + 0.1} s")
    out_dir = Path(out_dir)
    media = out_dir / "media" / "onset"
    media.mkdir(parents=True, exist_ok=True)
    tools = find_tools()
    rows: list[Clip] = []
    expected: dict[str, dict[str, Any]] = {}
    times = frame_times(MEDIA.fps, duration_s, False)
    with tempfile.TemporaryDirectory(prefix="onset_corpus_") as tmp:
        for spec in plan_onset_clips(clips=clips, held_out=held_out, seed=seed):
            rng = np.random.default_rng(spec["seed"])
            cls, onset = SOUND_CLASSES[spec["sound"]], spec["onset_s"]
            end = round(onset + TONE_S, 3)
            frames = onset_frames(cls, onset, end, times, rng)
            audio = onset_tone(cls, onset, end, duration_s, MEDIA.sample_rate, rng)
            path = media / f"{spec['clip_id']}.mp4"
            encode_video(tools, path, frames, MEDIA, Path(tmp), audio=audio[:, None], audio_sr=MEDIA.sample_rate)
            rows.append(Clip(clip_id=spec["clip_id"], task="v2s", dataset="synth_onsets", split=spec["split"],
                             video_path=path.relative_to(out_dir).as_posix()))
            expected[spec["clip_id"]] = {"outcome": "ok", "task": "v2s", "sound_class": spec["sound"],
                                         "tone_hz": cls.tone_hz, "onset_s": onset, "end_s": end,
                                         "duration_s": duration_s, "split": spec["split"]}
    atomic_write_text(out_dir / "expected.json", json.dumps(expected, indent=1, sort_keys=True))
    return write_manifest(rows, out_dir / "manifest.parquet")


# ----------------------------------------------------------------------------------------------------------------------
# Reading a clip of this corpus back from audio (generated or real): its pitch class and how sharply it starts


def band_energies(wave: np.ndarray, sr: int, start_s: float, end_s: float) -> dict[str, float]:
    """Energy of wave [n] between start_s and end_s in the half-octave band centred on each class's fundamental
    (Hann-windowed spectrum). The fundamentals are an octave apart, so the bands do not overlap."""
    seg = wave[int(start_s * sr):int(end_s * sr)].astype(np.float64)
    power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    freqs = np.fft.rfftfreq(len(seg), 1.0 / sr)
    return {name: float(power[(freqs >= hz * 2**-0.25) & (freqs < hz * 2**0.25)].sum())
            for name, hz in ((c, SOUND_CLASSES[c].tone_hz) for c in ONSET_CLASSES)}


def pitch_class(wave: np.ndarray, sr: int, start_s: float, end_s: float) -> str:
    """The class whose fundamental's band holds the most energy between start_s and end_s."""
    energies = band_energies(wave, sr, start_s, end_s)
    return max(energies, key=energies.get)


def onset_energy_ratio(wave: np.ndarray, sr: int, onset_s: float, *, window_s: float = 0.3,
                       guard_s: float = 0.05) -> float:
    """Mean power in [onset + guard, onset + guard + window] over that in [onset - guard - window, onset - guard]:
    how much louder the sound is just after onset_s than just before it (the guard skips the mel frames that
    straddle the onset)."""
    def power(a: float, b: float) -> float:
        seg = wave[max(int(a * sr), 0):int(b * sr)].astype(np.float64)
        return float(np.mean(seg**2))

    before = power(onset_s - guard_s - window_s, onset_s - guard_s)
    return power(onset_s + guard_s, onset_s + guard_s + window_s) / max(before, 1e-20)
