"""Every rate and frame factor of the feature contract, in one place.

One timeline per clip (docs/design.md, "Time base"):

    audio        16 kHz mono
    video        10 fps: row i is the frame on screen at i / 10 s
    mel          100 frames/s (hop 160 samples), 64 bands
    audio frame  25 frames/s: 4 mel frames, patched into one model frame or encoded into one VAE latent frame
    lip          25 fps: mouth crops (or their features); row i is the frame on screen at i / 25 s
    sync         the synchrony encoder's own rate (its config.json), 25 fps by default

Every temporal video stream picks its frames by the same presentation-time rule at its own rate
(`stream_times`).

The defaults of the stage configs come from here; a clip's actual rates are the ones its `dataset.json` records.
"""

from __future__ import annotations

import math

SAMPLE_RATE = 16_000           # Hz, mono
VIDEO_FPS = 10.0               # visual feature rows per second
MEL_HOP = 160                  # samples per mel frame
MEL_BANDS = 64
MEL_FPS = SAMPLE_RATE / MEL_HOP                      # 100 mel frames per second
MEL_PER_AUDIO_FRAME = 4        # mel frames per model (audio) frame: the mel patch and the VAE's time downsampling
AUDIO_FPS = MEL_FPS / MEL_PER_AUDIO_FRAME            # 25 model frames per second
LIP_FPS = 25.0                 # mouth-region stream rows per second (AV-HuBERT's rate)
SYNC_FPS = 25.0                # synchrony stream rows per second when its encoder states none
FRAME_TOLERANCE = 1            # a clip of d seconds has floor(rate * d) rows, +-1


def frames_in(duration_s: float, fps: float) -> int:
    """Rows a clip of `duration_s` has at `fps`: floor(fps * d) (the epsilon absorbs float error in d)."""
    return int(math.floor(duration_s * fps + 1e-6))


def audio_frames(n_mel_frames: int) -> int:
    """Model frames (and VAE latent frames) for a mel of `n_mel_frames`: the trailing n mod 4 frames are dropped."""
    return n_mel_frames // MEL_PER_AUDIO_FRAME


def audio_fps(mel_fps: float) -> float:
    """The model's frame rate for a mel at `mel_fps`."""
    return mel_fps / MEL_PER_AUDIO_FRAME


def stream_times(start_s: float, duration_s: float, fps: float):
    """Media times of a stream's rows over a clip: start + i / fps for i < frames_in(duration, fps). float64 [T]."""
    import numpy as np

    return start_s + np.arange(frames_in(duration_s, fps)) / fps
