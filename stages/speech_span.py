"""Where the speech is, and a transcript that matches the stored audio: the speech-span stage of extract.

Runs after decode and audio, on speech rows (visual_tts, tts, joint); other rows pass through. It sets the row's
speech span (`speech_start_s`/`speech_end_s`, media time) and says where it came from (`speech_span_source`):

  word_timings  the manifest's timed words (LRS2 with word tables, GRID): every word must lie inside the stored
                audio, else the row is rejected (`speech_too_long`): the reader cuts long clips at word boundaries
                (manifests/readers/words.py), so a word past the audio means the manifest and the media disagree
  manifest      the manifest's speech span; a clip cut at max_seconds whose span runs past the cut is rejected
                (`speech_too_long`): its transcript would name words the audio does not hold
  vad           no span in the manifest: silero-vad (its model ships in the `silero-vad` wheel) on the stored audio
                gives [first speech start, last speech end]. A clip decode cut at max_seconds has its whole
                source read again and searched: when all its speech fits in max_seconds, the trim window is moved
                onto it and the clip decoded anew (`window_source` "vad"), else `speech_too_long`. A speech clip in
                which the detector finds no speech at all is rejected (`no_speech_detected`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

import numpy as np

from manifests.tasks import SPEECH_TASKS
from stages.base import Reject, Row, Stage

TOLERANCE_S = 0.05        # a word may end this much past the audio (rounding of corpus times)
VAD_PAD_S = 0.1           # silence kept before the first and after the last detected speech when a window moves
SPAN_SOURCES = ("word_timings", "manifest", "vad")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VadConfig:
    threshold: float = 0.5            # silero's speech probability threshold
    min_speech_ms: int = 150          # shorter bursts are not speech
    min_silence_ms: int = 100         # shorter pauses do not split speech (silero's default; 300 ms ran the
                                      # last segment on through a clip's 0.3 s trailing silence)
    speech_pad_ms: int = 30           # silero's padding of each detected segment

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SpeechSpanStage(Stage):
    """Speech rows -> row speech_start_s/speech_end_s (media time), speech_span_source, window_source."""

    name = "speech_span"

    def __init__(self, *, data_root: str, decode, mel, loudness, vad: VadConfig = VadConfig(), streams: tuple = ()):
        super().__init__()
        self.data_root = str(data_root)
        self.decode_config, self.mel, self.loudness, self.vad = decode, mel, loudness, vad
        self.streams = tuple(streams)   # the extra streams' frame needs: a moved window is decoded as decode did
        self._model = None

    def setup(self) -> None:
        from silero_vad import load_silero_vad

        self._model = load_silero_vad()  # the TorchScript model inside the wheel: nothing is downloaded

    def process(self, row: Row) -> None:
        row.setdefault("speech_span_source", None)
        row.setdefault("window_source", None)
        if row.get("task") not in SPEECH_TASKS or row.get("transcript_problem"):
            return  # no speech to place; a transcript that could not be read is the phoneme stage's reject
        start, duration = float(row.get("start_s") or 0.0), float(row["duration_s"])
        words = timed_words(row.get("words"))
        if words:
            first, last = min(w["start_s"] for w in words), max(w["end_s"] for w in words)
            if first < start - TOLERANCE_S or last > start + duration + TOLERANCE_S:
                raise Reject("speech_too_long", f"timed words run {first:.2f}-{last:.2f} s but the stored audio "
                             f"holds {start:.2f}-{start + duration:.2f} s" + _cut_note(row))
            self._set(row, first, last, "word_timings")
        elif row.get("speech_start_s") is not None and row.get("speech_end_s") is not None:
            if row.get("cut") and float(row["speech_end_s"]) > start + duration + TOLERANCE_S:
                raise Reject("speech_too_long", f"the manifest's speech span ends at {row['speech_end_s']:.2f} s, "
                             f"past the stored audio ({start + duration:.2f} s)" + _cut_note(row))
            self._set(row, float(row["speech_start_s"]), float(row["speech_end_s"]), "manifest")
        elif row.get("cut"):
            self._move_window(row)
        else:
            a, b = self._speech(np.asarray(row["audio"], np.float32), row)
            self._set(row, start + a, start + b, "vad")

    def _set(self, row: Row, a: float, b: float, source: str) -> None:
        row.update(speech_start_s=a, speech_end_s=b, speech_span_source=source)

    def speech_segments(self, wave: np.ndarray) -> list[tuple[float, float]]:
        """Speech in a 16 kHz mono wave `[N]`: (start, end) seconds of each segment silero-vad finds."""
        import torch
        from silero_vad import get_speech_timestamps

        if self._model is None:
            self.setup()
        found = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(wave, np.float32)), self._model, sampling_rate=16000,
            threshold=self.vad.threshold, min_speech_duration_ms=self.vad.min_speech_ms,
            min_silence_duration_ms=self.vad.min_silence_ms, speech_pad_ms=self.vad.speech_pad_ms)
        return [(s["start"] / 16000, s["end"] / 16000) for s in found]

    def _speech(self, wave: np.ndarray, row: Row) -> tuple[float, float]:
        segments = self.speech_segments(wave)
        if not segments:
            raise Reject("no_speech_detected", f"the voice-activity detector found no speech in {len(wave) / 16000:.2f}"
                         f" s of a {row['task']} clip")
        return segments[0][0], segments[-1][1]

    def _move_window(self, row: Row) -> None:
        """A clip cut at max_seconds without timings: find all its speech in the whole source; when it fits, decode
        the clip anew on a window around it, else reject."""
        from stages.audio import AudioFeatureStage
        from stages.decode import DecodeStage

        cfg = self.decode_config
        whole = dataclasses.replace(cfg, max_seconds=cfg.max_source_seconds)
        probe = {k: row.get(k) for k in ("clip_id", "video_path", "audio_path", "start_s", "end_s")} | {"task": "tts"}
        DecodeStage(data_root=self.data_root, config=whole).process(probe)  # audio only: no frames are decoded
        a, b = self._speech(probe["audio"], row)
        if b - a > cfg.max_seconds - 2 * VAD_PAD_S:
            raise Reject("speech_too_long", f"speech runs {a:.2f}-{b:.2f} s of the clip ({b - a:.2f} s), more than "
                         f"max_seconds {cfg.max_seconds} s, and the manifest has no word timings to cut it at")
        start = float(row.get("start_s") or 0.0) + max(a - VAD_PAD_S, 0.0)
        redo = {k: v for k, v in row.items() if not k.startswith(("reject_", "t_"))}
        redo.update(start_s=round(start, 3), end_s=round(start + min(b - a + 2 * VAD_PAD_S, cfg.max_seconds), 3))
        for stage in (DecodeStage(data_root=self.data_root, config=cfg, streams=self.streams),
                      AudioFeatureStage(mel=self.mel, loudness=self.loudness)):
            stage.process(redo)
        row.update(redo)
        first = float(row["start_s"])
        a2, b2 = self._speech(np.asarray(row["audio"], np.float32), row)
        row["window_source"] = "vad"
        self._set(row, first + a2, first + b2, "vad")


def timed_words(value: Any) -> list[dict]:
    """A row's words (a JSON list, as extract hands them to Ray, or a list of dicts) as a list of dicts."""
    if value is None:
        return []
    return list(json.loads(value) if isinstance(value, str) else value)


def _cut_note(row: Row) -> str:
    return " (the clip was cut at max_seconds)" if row.get("cut") else ""


def describe(vad: VadConfig) -> Optional[dict[str, Any]]:
    from importlib.metadata import version

    return {"detector": "silero-vad", "version": version("silero-vad"), **vad.to_dict()}
