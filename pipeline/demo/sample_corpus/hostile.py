"""The hostile rows' files: media the pipeline must reject, each in the one way its row promises.

plan._bad_specs lists the rows with their expected (stage, reason); here each row's clip id has a recipe that
writes its file under media/bad/ (or, for a missing file or a path outside the root, writes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import soundfile as sf

from manifests.schema import Clip
from pipeline.demo.sample_corpus.draw import sound_frames
from pipeline.demo.sample_corpus.encode import Tools, encode_video, frame_times, write_wav
from pipeline.demo.sample_corpus.plan import PLAIN_SENTENCE, SOUND_CLASSES, MediaFormat, SampleSpec
from pipeline.demo.sample_corpus.render import root_relative
from pipeline.demo.sample_corpus.sound import random_onsets, sound_track
from pipeline.demo.sample_corpus.speech import SPEECH_RATE, speak

ESCAPING_PATH = "../outside.wav"  # the path_escapes_root row's audio path; nothing is written there
V2S_MEDIA = MediaFormat("mp4", 44100, 1, "25")
V2S_CLASS = SOUND_CLASSES["redcircle"]

VideoAudio = tuple[Optional[Path], Optional[Path]]  # the row's (video, audio) files


@dataclass
class _Kit:
    """What a recipe writes with: the tools, media/bad/, a scratch folder and the row's generator."""

    tools: Tools
    folder: Path
    tmp: Path
    rng: np.random.Generator

    def sound_video(self, duration_s: float, path: Path, *, with_audio: bool) -> Path:
        """A well-formed v2s clip (mono 44.1 kHz sound when with_audio) at path."""
        onsets = random_onsets(self.rng, duration_s)
        frames = sound_frames(V2S_CLASS, onsets, frame_times("25", duration_s, False), self.rng, duration_s)
        track = sound_track(V2S_CLASS, onsets, duration_s, 44100, self.rng)[:, None] if with_audio else None
        encode_video(self.tools, path, frames, V2S_MEDIA, self.tmp, audio=track, audio_sr=44100)
        return path

    def speech_wav(self) -> Path:
        """Good speech of PLAIN_SENTENCE, written once and shared by the rows whose fault is elsewhere."""
        path = self.folder / "speech_ok.wav"
        if not path.exists():
            wave = speak(self.tools, self.tmp, PLAIN_SENTENCE, "en-us", 160, 50)
            write_wav(path, 0.7 * wave / np.abs(wave).max(), SPEECH_RATE)
        return path


def _missing_file(kit: _Kit, name: str) -> VideoAudio:
    return None, kit.folder / "missing.wav"


def _truncated(kit: _Kit, name: str) -> VideoAudio:
    """No moov atom: the index sits at the end of a non-faststart mp4, and the file stops at 30%."""
    whole = kit.sound_video(3.0, kit.tmp / "whole.mp4", with_audio=True).read_bytes()
    video = kit.folder / f"{name}.mp4"
    video.write_bytes(whole[: int(0.3 * len(whole))])
    return video, None


def _random_bytes(kit: _Kit, name: str) -> VideoAudio:
    video = kit.folder / f"{name}.mp4"
    video.write_bytes(kit.rng.bytes(20000))
    return video, None


def _empty_file(kit: _Kit, name: str) -> VideoAudio:
    video = kit.folder / f"{name}.mp4"
    video.write_bytes(b"")
    return video, None


def _no_audio(kit: _Kit, name: str) -> VideoAudio:
    return kit.sound_video(2.0, kit.folder / f"{name}.mp4", with_audio=False), None


def _speech_only(kit: _Kit, name: str) -> VideoAudio:
    """Good speech: the fault is the missing video or the transcript."""
    return None, kit.speech_wav()


def _too_short(kit: _Kit, name: str) -> VideoAudio:
    audio = kit.folder / f"{name}.wav"
    t = np.arange(int(0.05 * 16000)) / 16000
    write_wav(audio, 0.5 * np.sin(2 * np.pi * 300 * t), 16000)
    return None, audio


def _single_frame(kit: _Kit, name: str) -> VideoAudio:
    video = kit.folder / f"{name}.mp4"
    frames = sound_frames(V2S_CLASS, [0.2], np.zeros(1), kit.rng, 1.0)
    encode_video(kit.tools, video, frames, V2S_MEDIA, kit.tmp,
                 audio=sound_track(V2S_CLASS, [0.2], 1.0, 44100, kit.rng)[:, None], audio_sr=44100)
    return video, None


def _nan_samples(kit: _Kit, name: str) -> VideoAudio:
    audio = kit.folder / f"{name}.wav"
    wave, _ = sf.read(kit.speech_wav(), dtype="float32")
    wave[1000:1100] = np.nan
    wave[5000:5010] = np.inf
    write_wav(audio, wave, SPEECH_RATE, subtype="FLOAT")
    return None, audio


def _path_escape(kit: _Kit, name: str) -> VideoAudio:
    return None, None  # the row points at ESCAPING_PATH; nothing is created outside the root


def _no_face(kit: _Kit, name: str) -> VideoAudio:
    """Good speech over a video without a face: the mouth stream finds nothing to read."""
    return kit.sound_video(2.5, kit.folder / f"{name}.mp4", with_audio=False), kit.speech_wav()


def _silent(kit: _Kit, name: str) -> VideoAudio:
    audio = kit.folder / f"{name}.wav"
    write_wav(audio, np.zeros(2 * 16000, np.float32), 16000)
    return None, audio


_RECIPES: dict[str, Callable[[_Kit, str], VideoAudio]] = {
    "bad_missing_file": _missing_file,
    "bad_truncated": _truncated,
    "bad_random_bytes": _random_bytes,
    "bad_empty_file": _empty_file,
    "bad_no_audio": _no_audio,
    "bad_no_video": _speech_only,
    "bad_too_short": _too_short,
    "bad_single_frame": _single_frame,
    "bad_nan_samples": _nan_samples,
    "bad_path_escape": _path_escape,
    "bad_silent": _silent,
    "bad_no_face": _no_face,
    "bad_emoji_transcript": _speech_only,
    "bad_punct_transcript": _speech_only,
    "bad_empty_transcript": _speech_only,
}


def render_hostile(spec: SampleSpec, tools: Tools, root: Path, tmp: Path) -> tuple[Clip, dict[str, Any]]:
    """Write a hostile row's file; return its manifest row and the reject it must get."""
    recipe = _RECIPES.get(spec.clip_id)
    if recipe is None:
        raise AssertionError(f"no recipe for {spec.clip_id}")
    kit = _Kit(tools, root / "media" / "bad", tmp, np.random.default_rng(spec.seed))
    video, audio = recipe(kit, spec.clip_id.removeprefix("bad_"))
    stage, reason = spec.bad
    audio_rel = ESCAPING_PATH if reason == "path_escapes_root" else (root_relative(audio, root) if audio else None)
    clip = Clip(clip_id=spec.clip_id, task=spec.task, dataset="synth_bad", split=spec.split,
                video_path=root_relative(video, root) if video else None, audio_path=audio_rel,
                transcript=spec.transcript, speaker="en-us" if spec.transcript is not None else None)
    return clip, {"outcome": "reject", "task": spec.task, "stage": stage, "reason": reason}
