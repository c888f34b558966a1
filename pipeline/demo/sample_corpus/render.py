"""The good clips, one renderer per task: each writes a spec's media under root and returns its manifest row and
its notes for expected.json (what the pipeline must find in it).

Every renderer draws its randomness from one generator seeded with the spec's seed, in a fixed order, so the same
plan gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from manifests.schema import Clip
from pipeline.demo.sample_corpus.draw import sound_frames
from pipeline.demo.sample_corpus.encode import (
    Tools,
    encode_audio,
    encode_video,
    file_suffix,
    frame_times,
    set_rotation,
    video_frame_pts_s,
    write_wav,
)
from pipeline.demo.sample_corpus.face import BouncingShape, face_for, mouth_track, talking_frames
from pipeline.demo.sample_corpus.plan import SOUND_CLASSES, SampleSpec
from pipeline.demo.sample_corpus.sound import random_onsets, room_tone, sound_track, spread
from pipeline.demo.sample_corpus.speech import SPEECH_RATE, speech_layout
from stages.decode import DecodeConfig

MAX_SECONDS = DecodeConfig().max_seconds  # the decode stage cuts longer clips (note `cut`)

Notes = dict[str, Any]
Renderer = Callable[[SampleSpec, Tools, Path, Path], tuple[Clip, Notes]]  # (spec, tools, root, tmp)


def root_relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _media_notes(spec: SampleSpec, duration_s: float) -> Notes:
    m = spec.media
    return {"outcome": "ok", "task": spec.task, "cut": duration_s > MAX_SECONDS, "duration_s": round(duration_s, 3),
            "container": m.container, "sample_rate": m.sample_rate, "channels": m.channels,
            "fps": "vfr" if spec.vfr else m.fps, "vfr": spec.vfr, "rotation_deg": 90 if spec.rotate else 0}


def render_v2s(spec: SampleSpec, tools: Tools, root: Path, tmp: Path) -> tuple[Clip, Notes]:
    """A bouncing shape and its sound: muxed, or with the sound in its own wav, rotated, or at a variable rate."""
    rng = np.random.default_rng(spec.seed)
    cls = SOUND_CLASSES[spec.sound]
    audio_s = spec.audio_s or spec.duration_s
    onsets = random_onsets(rng, min(spec.duration_s, audio_s))
    frames = sound_frames(cls, onsets, frame_times(spec.media.fps, spec.duration_s, spec.vfr), rng, spec.duration_s)
    sr = spec.media.sample_rate
    audio = spread(sound_track(cls, onsets, audio_s, sr, rng), spec.media.channels)
    suffix = file_suffix(spec.media)
    video = root / "media" / "v2s" / f"{spec.clip_id}{suffix}"
    audio_path = None
    if spec.separate_audio:
        audio_path = video.with_suffix(".wav")
        write_wav(audio_path, audio, sr)
        encode_video(tools, video, frames, spec.media, tmp)
    elif spec.rotate:
        plain = tmp / f"{spec.clip_id}_plain{suffix}"
        encode_video(tools, plain, frames, spec.media, tmp, audio=audio, audio_sr=sr)
        set_rotation(tools, plain, video, 90)
    else:
        encode_video(tools, video, frames, spec.media, tmp, audio=audio, audio_sr=sr, vfr=spec.vfr)
    if spec.vfr and len(set(np.round(np.diff(video_frame_pts_s(tools.ffmpeg, video)), 4))) < 2:
        raise RuntimeError(f"{video.name} came out with a constant frame rate; expected variable")
    start_s = end_s = None
    if spec.trim:
        start_s = round(float(rng.uniform(0.3, 0.8)), 3)
        end_s = round(start_s + float(rng.uniform(2.0, 2.8)), 3)
    clip = Clip(clip_id=spec.clip_id, task="v2s", dataset="synth_sound", split=spec.split,
                video_path=root_relative(video, root),
                audio_path=root_relative(audio_path, root) if audio_path else None, start_s=start_s, end_s=end_s)
    notes = _media_notes(spec, spec.duration_s)
    notes.update(sound_class=spec.sound, tone_hz=cls.tone_hz, onsets_s=onsets, separate_audio=spec.separate_audio,
                 audio_duration_s=round(audio_s, 3))
    return clip, notes


def render_tts(spec: SampleSpec, tools: Tools, root: Path, tmp: Path) -> tuple[Clip, Notes]:
    """Speech alone, in an audio file."""
    rng = np.random.default_rng(spec.seed)
    track, s0, s1 = speech_layout(spec, tools, tmp, rng)
    track += room_tone(len(track), rng)
    path = root / "media" / "tts" / f"{spec.clip_id}{file_suffix(spec.media)}"
    encode_audio(tools, path, track, SPEECH_RATE, spec.media, tmp)
    start_s, end_s = (round(s0 - 0.15, 3), round(s1 + 0.15, 3)) if spec.trim else (None, None)
    clip = Clip(clip_id=spec.clip_id, task="tts", dataset="synth_voices", split=spec.split,
                audio_path=root_relative(path, root), transcript=spec.transcript, speaker=spec.voice,
                start_s=start_s, end_s=end_s)
    return clip, _media_notes(spec, len(track) / SPEECH_RATE)


def render_face_video(spec: SampleSpec, tools: Tools, root: Path, tmp: Path) -> tuple[Clip, Notes]:
    """visual_tts and joint: a talking face (joint: beside a bouncing sound shape, sounds mixed)."""
    rng = np.random.default_rng(spec.seed)
    speech, s0, s1 = speech_layout(spec, tools, tmp, rng)
    duration_s = len(speech) / SPEECH_RATE
    times = frame_times(spec.media.fps, duration_s, False)
    opening = mouth_track(speech, SPEECH_RATE, times)
    face = face_for(spec.voice, rng, duration_s)
    joint = spec.task == "joint"
    shape = BouncingShape(SOUND_CLASSES[spec.sound], random_onsets(rng, duration_s)) if joint else None
    sway = rng.uniform(0, 2 * np.pi)
    frames = talking_frames(face, times, opening, sway, beside=shape)
    audio = speech
    if joint:
        audio = speech + 0.35 * sound_track(shape.cls, shape.onsets_s, duration_s, SPEECH_RATE, rng)[: len(speech)]
    audio = audio + room_tone(len(audio), rng)
    folder = "joint" if joint else "visual_tts"
    path = root / "media" / folder / f"{spec.clip_id}{file_suffix(spec.media)}"
    encode_video(tools, path, frames, spec.media, tmp, audio=spread(audio, spec.media.channels),
                 audio_sr=SPEECH_RATE)
    start_s, end_s = (round(s0 - 0.15, 3), round(s1 + 0.15, 3)) if spec.trim else (None, None)
    clip = Clip(clip_id=spec.clip_id, task=spec.task, dataset="synth_joint" if joint else "synth_faces",
                split=spec.split, video_path=root_relative(path, root), transcript=spec.transcript,
                speaker=spec.voice, start_s=start_s, end_s=end_s,
                speech_start_s=round(s0, 3) if joint else None, speech_end_s=round(s1, 3) if joint else None)
    notes = _media_notes(spec, duration_s)
    notes.update(speech_span_s=[round(s0, 3), round(s1, 3)])
    if joint:
        notes.update(sound_class=spec.sound, tone_hz=shape.cls.tone_hz, onsets_s=shape.onsets_s)
    return clip, notes


RENDERERS: dict[str, Renderer] = {
    "v2s": render_v2s, "tts": render_tts, "visual_tts": render_face_video, "joint": render_face_video,
}
