"""Speech from espeak-ng, laid out as a clip's track: lead silence, an optional earlier utterance, the row's own.

A transcript of six words or more is spoken as two phrases with a pause between them (0.3 to 0.5 s), so talking
faces close their mouths between phrases, as people do.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.demo.sample_corpus.encode import Tools, run_tool
from pipeline.demo.sample_corpus.plan import SampleSpec

SPEECH_RATE = 22050  # espeak-ng's output rate


def speak(tools: Tools, tmp: Path, text: str, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """[n] float32 at 22050 Hz: espeak-ng speech with its leading and trailing silence cut to 20 ms."""
    path = tmp / f"speak_{zlib.crc32(f'{text}|{voice}|{speed_wpm}|{pitch}'.encode()):08x}.wav"
    run_tool([tools.espeak, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(path), "--stdin"],
             stdin=text.encode("utf-8"), what=f"speaking {text!r}")
    wave, sr = sf.read(path, dtype="float32")
    if sr != SPEECH_RATE or wave.ndim != 1 or len(wave) == 0:
        raise RuntimeError(f"espeak-ng wrote unexpected audio ({sr} Hz, shape {wave.shape}) for {text!r}")
    active = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    margin = int(0.02 * sr)
    return wave[max(active[0] - margin, 0):active[-1] + margin]


def spoken_phrases(spec: SampleSpec, tools: Tools, tmp: Path, rng: np.random.Generator) -> np.ndarray:
    """[n] float32: the transcript spoken whole, or as two phrases split at its middle word with a pause between."""
    words = spec.transcript.split()
    speak_it = lambda text: speak(tools, tmp, text, spec.voice, spec.speed_wpm, spec.pitch)
    if len(words) < 6:
        return speak_it(spec.transcript)
    half = len(words) // 2
    pause = np.zeros(int(rng.uniform(0.3, 0.5) * SPEECH_RATE), np.float32)
    return np.concatenate([speak_it(" ".join(words[:half])), pause, speak_it(" ".join(words[half:]))])


def speech_layout(spec: SampleSpec, tools: Tools, tmp: Path, rng: np.random.Generator,
                  ) -> tuple[np.ndarray, float, float]:
    """Speech track [n] at 22050 Hz (row utterance, after `lead_text` if any) and the row utterance's span (s)."""
    speech = spoken_phrases(spec, tools, tmp, rng)
    lead = int(rng.uniform(0.2, 0.45) * SPEECH_RATE)
    parts = [np.zeros(lead, np.float32)]
    if spec.lead_text:
        parts += [speak(tools, tmp, spec.lead_text, spec.voice, spec.speed_wpm, spec.pitch),
                  np.zeros(int(0.7 * SPEECH_RATE), np.float32)]
    start = sum(len(p) for p in parts)
    parts += [speech, np.zeros(int(0.3 * SPEECH_RATE), np.float32)]
    track = np.concatenate(parts)
    track *= 0.7 / max(np.abs(track).max(), 1e-9)
    return track, start / SPEECH_RATE, (start + len(speech)) / SPEECH_RATE
