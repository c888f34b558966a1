"""The time-sensitive conditions of a mixture (docs/design.md, "Mixtures"): lip, sync and the speaker reference.

Every stream is placed by presentation time: mixture row i (time i / fps) shows the source row on screen at that
time, the speech source shifted by the recipe's offset, the sound source repeated past its end (as the CLIP
stream is placed by `stages.mix`).

- `lip`: the speech source's mouth rows and their validity over its speech span; empty (zero, valid 0) elsewhere,
  and everywhere when the speech source has no face (TTS speech).
- `sync`: the sound source's rows, with the speech source's rows over the speech clip summed (`add`) or in their
  place (`insert`), kept (`sound_only`), as the CLIP stream.
- `speaker`: the speech source's reference, as it is.

`speech_mask` is the audio gain that `insert` applies to the sound (recipe version 2: the speech replaces the
sound under the speech span), with 10 ms ramps so the cut does not click.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from stages.base import Reject

RAMP_S = 0.01


def shown_rows(times_s: np.ndarray, fps: float) -> np.ndarray:
    """Index of the source row on screen at each source time (may be negative or past the end)."""
    return np.floor(times_s * fps + 1e-6).astype(np.int64)


def speech_mask(n: int, rate: int, start_s: float, end_s: float) -> np.ndarray:
    """float32 [n]: 1, falling to 0 over [start_s, end_s] with RAMP_S linear ramps inside the span."""
    t = np.arange(n) / rate
    ramp = max(RAMP_S, 1e-9)
    inside = np.minimum(t - start_s, end_s - t) / ramp           # > 0 inside the span, 1 at RAMP_S from its edges
    return (1.0 - np.clip(inside, 0.0, 1.0)).astype(np.float32)


def mix_lip(speech: dict, name: str, stream: dict, offset_s: float, span_s: tuple[float, float],
            duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows [T, *frame_shape], valid uint8 [T]) of the mixture's mouth stream (see the module docstring)."""
    fps = stream["fps"]
    n = int(np.floor(duration_s * fps + 1e-6))
    rows = np.zeros((n, *stream["frame_shape"]), np.dtype(stream["dtype"]))
    valid = np.zeros(n, np.uint8)
    source, source_valid = speech["arrays"].get(name), speech["arrays"].get(f"{name}_valid")
    if source is None:
        return rows, valid
    times = np.arange(n) / fps - offset_s                          # speech-source time of each mixture row
    j = shown_rows(times, fps)
    keep = (j >= 0) & (j < len(source)) & (times >= span_s[0]) & (times < span_s[1])
    rows[keep] = source[j[keep]]
    valid[keep] = source_valid[j[keep]] if source_valid is not None else 1
    return rows, valid


def mix_sync(speech: dict, sound: dict, name: str, stream: dict, mode: str, offset_s: float,
             duration_s: float) -> np.ndarray:
    """float16 [T, dim]: the sound's rows (repeated), with the speech's over the speech clip per `mode`."""
    fps = stream["fps"]
    n = int(np.floor(duration_s * fps + 1e-6))
    sound_rows = sound["arrays"].get(name)
    if sound_rows is None:
        raise Reject("bad_source", f"sound {sound['key']} has no {name} stream")
    t = np.arange(n) / fps
    j = np.clip(shown_rows(np.mod(t, sound["meta"]["duration_s"]), fps), 0, len(sound_rows) - 1)
    out = sound_rows[j].copy()                                     # [T, dim]
    if mode == "sound_only":
        return out
    speech_rows = speech["arrays"].get(name)
    if speech_rows is None:
        raise Reject("bad_source", f"mode {mode} needs the speech's {name} stream; {speech['key']} has none")
    k = shown_rows(t - offset_s, fps)
    over = (k >= 0) & (k < len(speech_rows))
    if mode == "add":
        out[over] = (out[over].astype(np.float32) + speech_rows[k[over]].astype(np.float32)).astype(out.dtype)
    else:
        out[over] = speech_rows[k[over]]
    return out


def mix_streams(speech: dict, sound: dict, *, streams: Optional[dict], speaker: Optional[dict], mode: str,
                offset_s: float, span_s: tuple[float, float], duration_s: float) -> dict[str, Any]:
    """The mixture's arrays of the contract's extra streams and speaker reference, by member name."""
    out: dict[str, Any] = {}
    for name, stream in sorted((streams or {}).items()):
        if stream["region"] == "mouth":   # the speaker's face: only where the speech is
            out[name], out[f"{name}_valid"] = mix_lip(speech, name, stream, offset_s, span_s, duration_s)
        else:
            out[name] = mix_sync(speech, sound, name, stream, mode, offset_s, duration_s)
    if speaker:
        reference = speech["arrays"].get("speaker")
        if reference is None:
            raise Reject("bad_source", f"speech {speech['key']} has no speaker reference")
        out["speaker"] = reference
    return out
